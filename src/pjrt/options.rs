//! Compile options, encoded as XLA's `CompileOptionsProto` with prost.

use prost::Message;

use super::error::{Error, Result};
use super::proto;

/// What `PJRT_Client_Compile` needs to know besides the program.
///
/// Everything the CPU plugin would CHECK-abort on (0 replicas or partitions, a device assignment of
/// the wrong size) is rejected by [`CompileOptions::encode`] before any call into the plugin.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CompileOptions {
    /// >= 1.
    pub num_replicas: i64,
    /// >= 1; the number of SPMD partitions (devices) of one replica.
    pub num_partitions: i64,
    /// Partition the module with the SPMD partitioner (needed when `num_partitions > 1`).
    pub use_spmd_partitioning: bool,
    /// Use Shardy; required when the module carries `sdy.*` shardings.
    pub use_shardy_partitioner: bool,
    /// Device ids, row-major `[replica][partition]` (`num_replicas * num_partitions` entries), like the
    /// `(replicas, partitions)` array jax takes. None lets the client choose.
    pub device_assignment: Option<Vec<i64>>,
    /// XLA debug options by name (`xla_cpu_enable_fast_math`, ...) with their values as text, passed as
    /// the proto's `env_option_overrides` (how JAX passes `compiler_options`); typed when encoded.
    pub xla_flags: Vec<(String, String)>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions::single_device()
    }
}

impl CompileOptions {
    /// One replica, one partition, no SPMD.
    pub fn single_device() -> CompileOptions {
        CompileOptions {
            num_replicas: 1,
            num_partitions: 1,
            use_spmd_partitioning: false,
            use_shardy_partitioner: false,
            device_assignment: None,
            xla_flags: Vec::new(),
        }
    }

    /// One replica split over `num_partitions` devices with the SPMD partitioner and Shardy.
    pub fn spmd(num_partitions: i64) -> CompileOptions {
        CompileOptions {
            num_replicas: 1,
            num_partitions,
            use_spmd_partitioning: true,
            use_shardy_partitioner: true,
            device_assignment: None,
            xla_flags: Vec::new(),
        }
    }

    /// Sets the device assignment (row-major `[replica][partition]`).
    pub fn with_device_assignment(mut self, device_ids: Vec<i64>) -> CompileOptions {
        self.device_assignment = Some(device_ids);
        self
    }

    /// Checks the options against everything known to abort the plugin.
    pub fn validate(&self) -> Result<()> {
        if self.num_replicas < 1 {
            return Err(Error::invalid(format!("num_replicas must be >= 1, got {}", self.num_replicas)));
        }
        if self.num_partitions < 1 {
            return Err(Error::invalid(format!("num_partitions must be >= 1, got {}", self.num_partitions)));
        }
        if self.num_replicas > i32::MAX as i64 || self.num_partitions > i32::MAX as i64 {
            return Err(Error::invalid("num_replicas / num_partitions too large"));
        }
        if let Some(ids) = &self.device_assignment {
            let want = self.num_replicas * self.num_partitions;
            if ids.len() as i64 != want {
                return Err(Error::invalid(format!(
                    "device_assignment has {} entries, but num_replicas * num_partitions = {want}",
                    ids.len()
                )));
            }
            if let Some(bad) = ids.iter().find(|&&id| id < 0) {
                return Err(Error::invalid(format!("device_assignment has a negative device id {bad}")));
            }
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(Error::invalid(format!("device_assignment uses device {} twice", w[0])));
            }
        }
        Ok(())
    }

    /// The `CompileOptionsProto` message.
    pub fn to_proto(&self) -> Result<proto::CompileOptionsProto> {
        self.validate()?;
        let device_assignment = self.device_assignment.as_ref().map(|ids| {
            let (r, p) = (self.num_replicas as usize, self.num_partitions as usize);
            // The proto is computation-major: one entry per partition listing its replicas' devices.
            let computation_devices = (0..p)
                .map(|c| proto::device_assignment_proto::ComputationDevice {
                    replica_device_ids: (0..r).map(|rep| ids[rep * p + c]).collect(),
                })
                .collect();
            proto::DeviceAssignmentProto {
                replica_count: r as i32,
                computation_count: p as i32,
                computation_devices,
            }
        });
        Ok(proto::CompileOptionsProto {
            executable_build_options: Some(proto::ExecutableBuildOptionsProto {
                device_ordinal: -1,
                num_replicas: self.num_replicas,
                num_partitions: self.num_partitions,
                use_spmd_partitioning: self.use_spmd_partitioning,
                use_auto_spmd_partitioning: false,
                device_assignment,
                use_shardy_partitioner: self.use_shardy_partitioner,
            }),
            env_option_overrides: self.xla_flags.iter().map(|(k, v)| (k.clone(), typed_override(v))).collect(),
        })
    }

    /// The serialized `CompileOptionsProto` passed to `PJRT_Client_Compile`.
    pub fn encode(&self) -> Result<Vec<u8>> {
        Ok(self.to_proto()?.encode_to_vec())
    }
}

/// A flag value as XLA's option override wants it: bool, integer, float, else text (XLA checks the
/// type against the named debug option and refuses a mismatch).
fn typed_override(text: &str) -> proto::OptionOverrideProto {
    use proto::option_override_proto::Value;
    let value = match text.trim() {
        "true" | "True" => Value::BoolField(true),
        "false" | "False" => Value::BoolField(false),
        t => match (t.parse::<i64>(), t.parse::<f64>()) {
            (Ok(i), _) => Value::IntField(i),
            (_, Ok(f)) => Value::DoubleField(f),
            _ => Value::StringField(t.to_string()),
        },
    };
    proto::OptionOverrideProto { value: Some(value) }
}

/// `compile_xla_flags` text (`--xla_a=1 --xla_b=true`, spaces or commas between flags) as
/// (name, value) pairs; a flag without `=` is `true`. Names must be XLA debug options (`xla_*`).
pub fn parse_xla_flags(text: &str) -> Result<Vec<(String, String)>> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|f| !f.is_empty())
        .map(|flag| {
            let body = flag.trim_start_matches('-');
            let (name, value) = body.split_once('=').unwrap_or((body, "true"));
            if !name.starts_with("xla_") {
                return Err(Error::invalid(format!(
                    "compile_xla_flags: `{flag}` is not an XLA flag (expected --xla_<name>=<value>)"
                )));
            }
            Ok((name.to_string(), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn single_device_bytes_match_the_recipe() {
        let bytes = CompileOptions::single_device().encode().unwrap();
        assert_eq!(hex(&bytes), "1a 0f 08 ff ff ff ff ff ff ff ff ff 01 20 01 28 01");
    }

    #[test]
    fn spmd4_shardy_bytes_match_the_recipe() {
        let bytes = CompileOptions::spmd(4).encode().unwrap();
        assert_eq!(hex(&bytes), "1a 14 08 ff ff ff ff ff ff ff ff ff 01 20 01 28 04 30 01 98 01 01");
    }

    #[test]
    fn device_assignment_is_computation_major() {
        let o = CompileOptions { num_replicas: 2, ..CompileOptions::spmd(2) }.with_device_assignment(vec![0, 1, 2, 3]);
        let da = o.to_proto().unwrap().executable_build_options.unwrap().device_assignment.unwrap();
        assert_eq!((da.replica_count, da.computation_count), (2, 2));
        assert_eq!(da.computation_devices[0].replica_device_ids, vec![0, 2]);
        assert_eq!(da.computation_devices[1].replica_device_ids, vec![1, 3]);
        let decoded = proto::CompileOptionsProto::decode(o.encode().unwrap().as_slice()).unwrap();
        assert_eq!(decoded, o.to_proto().unwrap());
    }

    #[test]
    fn invalid_options_are_rejected_before_encoding() {
        assert!(CompileOptions { num_replicas: 0, ..Default::default() }.encode().is_err());
        assert!(CompileOptions::spmd(0).encode().is_err());
        assert!(CompileOptions::spmd(4).with_device_assignment(vec![0, 1]).encode().is_err());
        assert!(CompileOptions::spmd(2).with_device_assignment(vec![1, 1]).encode().is_err());
        assert!(CompileOptions::spmd(2).with_device_assignment(vec![-1, 1]).encode().is_err());
    }
}
