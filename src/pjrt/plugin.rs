//! Loading a PJRT plugin: dlopen once per canonical path, version check, `PJRT_Plugin_Initialize`.
//!
//! Plugins are never unloaded: they own threads (thread pools, async transfer threads) that would run
//! unmapped code after a dlclose. The process-global registry keeps every loaded plugin alive.

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_char;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::error::{Error, ErrorCode, Result};
use super::sys::{self, Args};

/// Calls a function of the plugin's `PJRT_Api` table with an argument struct.
///
/// The function is looked up only if it lies inside the plugin's table (`struct_size`, so an older
/// plugin with a shorter table is safe) and is non-null; otherwise `Error::Unimplemented`. A returned
/// `PJRT_Error` becomes `Error::Pjrt` with the plugin's message and is destroyed.
macro_rules! call {
    ($plugin:expr, $func:ident, $args:expr) => {{
        let plugin: &$crate::pjrt::plugin::Plugin = $plugin;
        let offset = ::std::mem::offset_of!($crate::pjrt::sys::PJRT_Api, $func);
        let f: $crate::pjrt::sys::$func =
            if plugin.has_field(offset, ::std::mem::size_of::<$crate::pjrt::sys::$func>()) {
                // SAFETY: the field lies inside the plugin's table (checked against struct_size).
                unsafe { ::std::ptr::addr_of!((*plugin.raw()).$func).read() }
            } else {
                None
            };
        match f {
            None => Err($crate::pjrt::Error::Unimplemented(stringify!($func))),
            Some(f) => {
                // SAFETY: the argument struct is initialised with its struct_size and every pointer in
                // it outlives the call (callers keep the pointees alive in the enclosing scope).
                let err = unsafe { f($args) };
                plugin.check(stringify!($func), err)
            }
        }
    }};
}

/// A value of a `PJRT_NamedValue` (plugin attributes, cost analysis, create options).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String(String),
    Int64(i64),
    Int64List(Vec<i64>),
    Float(f32),
    Bool(bool),
    /// A value type this header does not know.
    Unknown(u32),
}

impl Value {
    /// The value as a number (ints, floats, bools), if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int64(v) => Some(*v as f64),
            Value::Float(v) => Some(*v as f64),
            Value::Bool(v) => Some(if *v { 1.0 } else { 0.0 }),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => write!(f, "{s:?}"),
            Value::Int64(v) => write!(f, "{v}"),
            Value::Int64List(v) => write!(f, "{v:?}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Unknown(t) => write!(f, "<value of unknown type {t}>"),
        }
    }
}

/// The PJRT C API version a plugin reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: i32,
    pub minor: i32,
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A loaded, initialised PJRT plugin (`PJRT_Api` table).
pub struct Plugin {
    path: PathBuf,
    api: *const sys::PJRT_Api,
    version: ApiVersion,
    /// Kept only so the library is never closed (the registry never drops a plugin).
    _lib: libloading::os::unix::Library,
}

// SAFETY: the PJRT C API is thread-safe; the table is immutable after GetPjrtApi.
unsafe impl Send for Plugin {}
unsafe impl Sync for Plugin {}

fn registry() -> &'static Mutex<HashMap<PathBuf, Arc<Plugin>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Arc<Plugin>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Sets an environment variable unless the user already set it.
fn set_env_default(key: &str, value: &str) {
    if std::env::var_os(key).is_none() {
        // Set before the plugin is loaded, while holding the registry lock, so no plugin thread reads
        // the environment concurrently.
        std::env::set_var(key, value);
    }
}

/// Whether this host has TPU chips (`/dev/accel*` on v4/v5p VMs, `/dev/vfio/<n>` on v5e/v6e), as JAX's
/// `cloud_tpu_init` decides whether it runs on a TPU VM.
pub fn tpu_chips_attached() -> bool {
    let any = |dir: &str, f: &dyn Fn(&str) -> bool| {
        std::fs::read_dir(dir).map(|d| d.flatten().any(|e| f(&e.file_name().to_string_lossy()))).unwrap_or(false)
    };
    any("/dev", &|n| n.starts_with("accel")) || any("/dev/vfio", &|n| n.chars().all(|c| c.is_ascii_digit()))
}

impl Plugin {
    /// Loads the plugin at `path` (once per canonical path per process) and initialises it.
    pub fn load(path: impl AsRef<Path>) -> Result<Arc<Plugin>> {
        let path = path.as_ref();
        let canonical = std::fs::canonicalize(path).map_err(|e| {
            Error::PluginNotFound(format!("{}: {e}", path.display()))
        })?;
        if !canonical.is_file() {
            return Err(Error::Load { path: canonical, reason: "not a regular file".into() });
        }
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = reg.get(&canonical) {
            return Ok(p.clone());
        }
        // Quiet absl INFO/WARNING logs (errors still show).
        set_env_default("TF_CPP_MIN_LOG_LEVEL", "2");
        let file_name = canonical.file_name().and_then(|f| f.to_str()).unwrap_or("");
        if file_name.contains("libtpu") && !tpu_chips_attached() {
            // Off a TPU VM (AOT compiles): without it libtpu retries the GCE metadata server for minutes.
            // On a TPU VM libtpu needs that server to learn its slice, so it is left alone there.
            set_env_default("TPU_SKIP_MDS_QUERY", "1");
            // Who this host is in a slice, which libtpu would otherwise warn about and guess; and several
            // compile-only processes may load libtpu at once (nothing is attached to contend for).
            set_env_default("TPU_WORKER_ID", "0");
            set_env_default("TPU_WORKER_HOSTNAMES", "localhost");
            set_env_default("ALLOW_MULTIPLE_LIBTPU_LOAD", "1");
        }
        let plugin = Arc::new(Self::open(&canonical)?);
        tracing::debug!(path = %canonical.display(), version = %plugin.version, "loaded PJRT plugin");
        reg.insert(canonical, plugin.clone());
        Ok(plugin)
    }

    fn open(path: &Path) -> Result<Plugin> {
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        let load_err = |reason: String| Error::Load { path: path.to_path_buf(), reason };
        // SAFETY: loading a shared library runs its initialisers; a PJRT plugin has no unsafe ones.
        let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
            .map_err(|e| load_err(format!("dlopen failed: {e}")))?;
        // SAFETY: GetPjrtApi has this signature in every PJRT plugin.
        let get_api = unsafe {
            lib.get::<unsafe extern "C" fn() -> *const sys::PJRT_Api>(b"GetPjrtApi\0")
        }
        .map_err(|_| load_err("not a PJRT plugin (no GetPjrtApi symbol)".into()))?;
        // SAFETY: see above.
        let api = unsafe { get_api() };
        if api.is_null() {
            return Err(load_err("GetPjrtApi returned null".into()));
        }
        // SAFETY: every PJRT_Api starts with struct_size, extension_start and pjrt_api_version.
        let (struct_size, version) = unsafe {
            let v = std::ptr::addr_of!((*api).pjrt_api_version).read();
            (std::ptr::addr_of!((*api).struct_size).read(), ApiVersion { major: v.major_version, minor: v.minor_version })
        };
        let min_size = std::mem::offset_of!(sys::PJRT_Api, PJRT_Plugin_Attributes);
        if struct_size < min_size {
            return Err(load_err(format!("PJRT_Api table too small ({struct_size} bytes)")));
        }
        if version.major != sys::PJRT_API_MAJOR as i32 {
            return Err(Error::Version {
                path: path.to_path_buf(),
                major: version.major,
                minor: version.minor,
                expected_major: sys::PJRT_API_MAJOR as i32,
                expected_minor: sys::PJRT_API_MINOR as i32,
            });
        }
        let plugin = Plugin { path: path.to_path_buf(), api, version, _lib: lib };
        let mut args = sys::PJRT_Plugin_Initialize_Args::new();
        call!(&plugin, PJRT_Plugin_Initialize, &mut args)?;
        Ok(plugin)
    }

    /// The canonical path the plugin was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The PJRT C API version the plugin was built with.
    pub fn api_version(&self) -> ApiVersion {
        self.version
    }

    /// The plugin's attributes (`xla_version`, `stablehlo_current_version`, ...).
    pub fn attributes(&self) -> Result<BTreeMap<String, Value>> {
        let mut args = sys::PJRT_Plugin_Attributes_Args::new();
        call!(self, PJRT_Plugin_Attributes, &mut args)?;
        // SAFETY: the plugin owns the array for its lifetime.
        let values = unsafe { named_values(args.attributes, args.num_attributes) };
        Ok(values.into_iter().collect())
    }

    pub(crate) fn raw(&self) -> *const sys::PJRT_Api {
        self.api
    }

    /// Whether a field at `offset` of `size` bytes lies inside the plugin's `PJRT_Api` table.
    pub(crate) fn has_field(&self, offset: usize, size: usize) -> bool {
        // SAFETY: struct_size is the first field of every table.
        let struct_size = unsafe { std::ptr::addr_of!((*self.api).struct_size).read() };
        offset + size <= struct_size
    }

    /// Turns a returned `PJRT_Error*` into a `Result`, destroying the error.
    pub(crate) fn check(&self, function: &'static str, err: *mut sys::PJRT_Error) -> Result<()> {
        if err.is_null() {
            return Ok(());
        }
        // SAFETY: the three error functions are at the start of every table; `err` is a live error
        // that we own and destroy exactly once below.
        unsafe {
            let mut message = String::from("<no message>");
            if let Some(f) = (*self.api).PJRT_Error_Message {
                let mut m = sys::PJRT_Error_Message_Args::new();
                m.error = err;
                f(&mut m);
                message = str_from_raw(m.message, m.message_size);
            }
            let mut code = ErrorCode::Unknown;
            if let Some(f) = (*self.api).PJRT_Error_GetCode {
                let mut c = sys::PJRT_Error_GetCode_Args::new();
                c.error = err;
                if f(&mut c).is_null() {
                    code = ErrorCode::from_raw(c.code);
                }
            }
            if let Some(f) = (*self.api).PJRT_Error_Destroy {
                let mut d = sys::PJRT_Error_Destroy_Args::new();
                d.error = err;
                f(&mut d);
            }
            Err(Error::Pjrt { function, code, message })
        }
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin").field("path", &self.path).field("api_version", &self.version).finish()
    }
}

/// Copies a (pointer, length) string owned by the plugin.
///
/// # Safety
/// `ptr` must point to `len` readable bytes (or be null).
pub(crate) unsafe fn str_from_raw(ptr: *const c_char, len: usize) -> String {
    if ptr.is_null() || len == 0 {
        return String::new();
    }
    let bytes = std::slice::from_raw_parts(ptr as *const u8, len);
    String::from_utf8_lossy(bytes).into_owned()
}

/// Copies an array of `PJRT_NamedValue`s owned by the plugin.
///
/// # Safety
/// `ptr` must point to `n` valid named values (or be null).
pub(crate) unsafe fn named_values(ptr: *const sys::PJRT_NamedValue, n: usize) -> Vec<(String, Value)> {
    if ptr.is_null() {
        return Vec::new();
    }
    std::slice::from_raw_parts(ptr, n)
        .iter()
        .map(|nv| {
            let name = str_from_raw(nv.name, nv.name_size);
            let u = &nv.__bindgen_anon_1;
            let value = match nv.type_ {
                sys::PJRT_NamedValue_kString => Value::String(str_from_raw(u.string_value, nv.value_size)),
                sys::PJRT_NamedValue_kInt64 => Value::Int64(u.int64_value),
                sys::PJRT_NamedValue_kInt64List => {
                    if u.int64_array_value.is_null() {
                        Value::Int64List(Vec::new())
                    } else {
                        Value::Int64List(std::slice::from_raw_parts(u.int64_array_value, nv.value_size).to_vec())
                    }
                }
                sys::PJRT_NamedValue_kFloat => Value::Float(u.float_value),
                sys::PJRT_NamedValue_kBool => Value::Bool(u.bool_value),
                other => Value::Unknown(other),
            };
            (name, value)
        })
        .collect()
}
