//! `PJRT_Client`: devices, and the entry point for buffers and compilation.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::device::Device;
use super::discovery::{locate_plugin, Hardware};
use super::error::{Error, Result};
use super::plugin::{str_from_raw, Plugin};
use super::sys::{self, Args};

/// Options for `PJRT_Client_Create`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// CPU plugin only: the number of CPU devices (create option `cpu_device_count`, default 4).
    pub cpu_device_count: Option<i64>,
}

/// The raw client; destroyed when the last `Client`, `Device`, `Buffer` or executable referring to it
/// is dropped, so buffers and executables are always destroyed before their client.
pub(crate) struct ClientInner {
    pub(crate) plugin: Arc<Plugin>,
    pub(crate) raw: *mut sys::PJRT_Client,
    pub(crate) platform_name: String,
    pub(crate) platform_version: String,
    pub(crate) id: u64,
}

// SAFETY: PJRT clients are thread-safe.
unsafe impl Send for ClientInner {}
unsafe impl Sync for ClientInner {}

impl Drop for ClientInner {
    fn drop(&mut self) {
        let mut args = sys::PJRT_Client_Destroy_Args::new();
        args.client = self.raw;
        if let Err(e) = call!(&self.plugin, PJRT_Client_Destroy, &mut args) {
            tracing::warn!("destroying a PJRT client: {e}");
        }
    }
}

struct ClientState {
    inner: Arc<ClientInner>,
    devices: Vec<Device>,
    addressable: Vec<Device>,
}

/// A PJRT client (cheap to clone; `Send + Sync`).
#[derive(Clone)]
pub struct Client(Arc<ClientState>);

/// Finds the plugin for `hardware` (see [`locate_plugin`]), loads it and creates a client.
/// `cpu_device_count` applies to the CPU plugin only.
pub fn open_client(hardware: Hardware, plugin_path: Option<&Path>, cpu_device_count: Option<i64>) -> Result<Client> {
    let path = locate_plugin(hardware, plugin_path)?;
    let plugin = Plugin::load(&path)?;
    let cpu_device_count = if hardware == Hardware::Cpu { cpu_device_count } else { None };
    Client::new(&plugin, &ClientOptions { cpu_device_count })
}

impl Client {
    /// Creates a client of `plugin`.
    pub fn new(plugin: &Arc<Plugin>, options: &ClientOptions) -> Result<Client> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let count_name = "cpu_device_count";
        let mut named = Vec::new();
        if let Some(n) = options.cpu_device_count {
            if n < 1 {
                return Err(Error::invalid(format!("cpu_device_count must be >= 1, got {n}")));
            }
            let mut nv = sys::PJRT_NamedValue::new();
            nv.name = count_name.as_ptr() as *const _;
            nv.name_size = count_name.len();
            nv.type_ = sys::PJRT_NamedValue_kInt64;
            nv.__bindgen_anon_1.int64_value = n;
            nv.value_size = 1;
            named.push(nv);
        }
        let mut args = sys::PJRT_Client_Create_Args::new();
        args.create_options = named.as_ptr();
        args.num_options = named.len();
        call!(plugin, PJRT_Client_Create, &mut args)?;
        let raw = args.client;
        if raw.is_null() {
            return Err(Error::invalid("PJRT_Client_Create returned a null client"));
        }
        // From here on the raw client is owned (destroyed on error too).
        let mut inner = ClientInner {
            plugin: plugin.clone(),
            raw,
            platform_name: String::new(),
            platform_version: String::new(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        };
        let mut pn = sys::PJRT_Client_PlatformName_Args::new();
        pn.client = raw;
        call!(plugin, PJRT_Client_PlatformName, &mut pn)?;
        let mut pv = sys::PJRT_Client_PlatformVersion_Args::new();
        pv.client = raw;
        call!(plugin, PJRT_Client_PlatformVersion, &mut pv)?;
        // SAFETY: the strings are owned by the client.
        unsafe {
            inner.platform_name = str_from_raw(pn.platform_name, pn.platform_name_size);
            inner.platform_version = str_from_raw(pv.platform_version, pv.platform_version_size);
        }
        let inner = Arc::new(inner);

        let mut d = sys::PJRT_Client_Devices_Args::new();
        d.client = raw;
        call!(plugin, PJRT_Client_Devices, &mut d)?;
        // SAFETY: the array is owned by the client.
        let devices = unsafe { raw_devices(d.devices, d.num_devices) }
            .into_iter()
            .map(|p| Device::from_raw(&inner, p))
            .collect::<Result<Vec<_>>>()?;
        let mut a = sys::PJRT_Client_AddressableDevices_Args::new();
        a.client = raw;
        call!(plugin, PJRT_Client_AddressableDevices, &mut a)?;
        // SAFETY: as above.
        let addressable = unsafe { raw_devices(a.addressable_devices, a.num_addressable_devices) }
            .into_iter()
            .map(|p| match devices.iter().find(|d| d.raw == p) {
                Some(d) => Ok(d.clone()),
                None => Device::from_raw(&inner, p),
            })
            .collect::<Result<Vec<_>>>()?;
        tracing::debug!(platform = %inner.platform_name, devices = devices.len(), "created PJRT client");
        Ok(Client(Arc::new(ClientState { inner, devices, addressable })))
    }

    pub(crate) fn inner(&self) -> &Arc<ClientInner> {
        &self.0.inner
    }

    /// The plugin this client belongs to.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.0.inner.plugin
    }

    /// A process-unique id of this client (used in cache keys).
    pub fn id(&self) -> u64 {
        self.0.inner.id
    }

    /// `"cpu"`, `"tpu"`, `"cuda"`, ...
    pub fn platform_name(&self) -> &str {
        &self.0.inner.platform_name
    }

    pub fn platform_version(&self) -> &str {
        &self.0.inner.platform_version
    }

    /// The index of this process in a multi-process job (0 for single-process).
    pub fn process_index(&self) -> Result<i32> {
        let mut args = sys::PJRT_Client_ProcessIndex_Args::new();
        args.client = self.0.inner.raw;
        call!(self.plugin(), PJRT_Client_ProcessIndex, &mut args)?;
        Ok(args.process_index)
    }

    /// All devices of the job.
    pub fn devices(&self) -> &[Device] {
        &self.0.devices
    }

    /// The devices this process can use.
    pub fn addressable_devices(&self) -> &[Device] {
        &self.0.addressable
    }

    /// The device with global id `id`.
    pub fn device(&self, id: i32) -> Option<&Device> {
        self.0.devices.iter().find(|d| d.id() == id)
    }

    /// Platform, plugin and one line per device, named like `jax.devices()` (the plugin's device
    /// string, which is what jax prints, e.g. `CpuDevice(id=0)`).
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let plugin = self.plugin();
        let _ = writeln!(s, "platform: {} (version {})", self.platform_name(), self.platform_version());
        let _ = writeln!(s, "plugin: {} (PJRT API {})", plugin.path().display(), plugin.api_version());
        let _ = writeln!(
            s,
            "process index: {}, devices: {} ({} addressable)",
            self.process_index().unwrap_or(0),
            self.devices().len(),
            self.addressable_devices().len()
        );
        for d in self.devices() {
            let hw = d.local_hardware_id().map(|h| format!(" local_hardware_id={h}")).unwrap_or_default();
            let _ = writeln!(
                s,
                "  {d} kind={} process_index={}{} [{}]",
                d.kind(),
                d.process_index(),
                hw,
                d.debug_string()
            );
        }
        s
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("platform", &self.platform_name())
            .field("devices", &self.devices().len())
            .field("plugin", &self.plugin().path())
            .finish()
    }
}

/// # Safety
/// `ptr` must point to `n` device pointers (or be null).
unsafe fn raw_devices(ptr: *const *mut sys::PJRT_Device, n: usize) -> Vec<*mut sys::PJRT_Device> {
    if ptr.is_null() {
        return Vec::new();
    }
    std::slice::from_raw_parts(ptr, n).to_vec()
}
