//! `PJRT_Device`: a device of a client, with its description read once.

use std::fmt;
use std::sync::Arc;

use super::client::ClientInner;
use super::error::{Error, Result};
use super::plugin::str_from_raw;
use super::sys::{self, Args};

#[derive(Debug)]
struct DeviceInfo {
    id: i32,
    kind: String,
    process_index: i32,
    local_hardware_id: Option<i32>,
    debug_string: String,
    to_string: String,
}

/// A device owned by a client (devices live as long as their client; this handle keeps it alive).
#[derive(Clone)]
pub struct Device {
    pub(crate) client: Arc<ClientInner>,
    pub(crate) raw: *mut sys::PJRT_Device,
    info: Arc<DeviceInfo>,
}

// SAFETY: a PJRT_Device is immutable and owned by the (thread-safe) client.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

impl Device {
    pub(crate) fn from_raw(client: &Arc<ClientInner>, raw: *mut sys::PJRT_Device) -> Result<Device> {
        if raw.is_null() {
            return Err(Error::invalid("the plugin returned a null device"));
        }
        let plugin = &client.plugin;
        let mut d = sys::PJRT_Device_GetDescription_Args::new();
        d.device = raw;
        call!(plugin, PJRT_Device_GetDescription, &mut d)?;
        let desc = d.device_description;

        let mut id = sys::PJRT_DeviceDescription_Id_Args::new();
        id.device_description = desc;
        call!(plugin, PJRT_DeviceDescription_Id, &mut id)?;

        let mut kind = sys::PJRT_DeviceDescription_Kind_Args::new();
        kind.device_description = desc;
        call!(plugin, PJRT_DeviceDescription_Kind, &mut kind)?;

        let mut pi = sys::PJRT_DeviceDescription_ProcessIndex_Args::new();
        pi.device_description = desc;
        call!(plugin, PJRT_DeviceDescription_ProcessIndex, &mut pi)?;

        let mut dbg = sys::PJRT_DeviceDescription_DebugString_Args::new();
        dbg.device_description = desc;
        call!(plugin, PJRT_DeviceDescription_DebugString, &mut dbg)?;

        let mut ts = sys::PJRT_DeviceDescription_ToString_Args::new();
        ts.device_description = desc;
        call!(plugin, PJRT_DeviceDescription_ToString, &mut ts)?;

        let mut hw = sys::PJRT_Device_LocalHardwareId_Args::new();
        hw.device = raw;
        let local_hardware_id = call!(plugin, PJRT_Device_LocalHardwareId, &mut hw).ok().map(|_| hw.local_hardware_id);

        // SAFETY: the strings are owned by the device description, which lives as long as the client.
        let info = unsafe {
            DeviceInfo {
                id: id.id,
                kind: str_from_raw(kind.device_kind, kind.device_kind_size),
                process_index: pi.process_index,
                local_hardware_id,
                debug_string: str_from_raw(dbg.debug_string, dbg.debug_string_size),
                to_string: str_from_raw(ts.to_string, ts.to_string_size),
            }
        };
        Ok(Device { client: client.clone(), raw, info: Arc::new(info) })
    }

    /// The global device id.
    pub fn id(&self) -> i32 {
        self.info.id
    }

    /// The device kind (`"cpu"`, `"TPU v5p"`, ...).
    pub fn kind(&self) -> &str {
        &self.info.kind
    }

    /// The index of the process that owns the device.
    pub fn process_index(&self) -> i32 {
        self.info.process_index
    }

    /// The hardware id local to the process (None if the plugin does not report it).
    pub fn local_hardware_id(&self) -> Option<i32> {
        self.info.local_hardware_id
    }

    /// The plugin's debug string (`TFRT_CPU_0`).
    pub fn debug_string(&self) -> &str {
        &self.info.debug_string
    }

    /// The plugin's to-string form (`CpuDevice(id=0)`-like; plugin specific).
    pub fn plugin_string(&self) -> &str {
        &self.info.to_string
    }

    /// jax-style name, e.g. `CpuDevice(id=0)`, `TpuDevice(id=3, process_index=0)`.
    pub fn jax_name(&self) -> String {
        let platform = self.client.platform_name.to_ascii_lowercase();
        let prefix = match platform.as_str() {
            "cpu" => "CpuDevice",
            "tpu" => "TpuDevice",
            "cuda" | "gpu" => "CudaDevice",
            "rocm" => "RocmDevice",
            _ => "Device",
        };
        if platform == "cpu" {
            format!("{prefix}(id={})", self.id())
        } else {
            format!("{prefix}(id={}, process_index={})", self.id(), self.process_index())
        }
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Device) -> bool {
        self.raw == other.raw
    }
}

impl Eq for Device {}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.info.to_string.is_empty() {
            f.write_str(&self.jax_name())
        } else {
            f.write_str(&self.info.to_string)
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("id", &self.info.id)
            .field("kind", &self.info.kind)
            .field("process_index", &self.info.process_index)
            .field("debug_string", &self.info.debug_string)
            .finish()
    }
}
