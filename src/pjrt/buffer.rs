//! `PJRT_Buffer`: device arrays, host <-> device transfers, and element types.

use std::sync::Arc;

use half::{bf16, f16};

use super::client::{Client, ClientInner};
use super::device::Device;
use super::error::{Error, Result};
use super::event::wait_raw;
use super::sys::{self, Args};
use crate::ir::DType;

/// `DType` -> `PJRT_Buffer_Type`.
pub(crate) fn dtype_to_raw(d: DType) -> sys::PJRT_Buffer_Type {
    match d {
        DType::F64 => sys::PJRT_Buffer_Type_F64,
        DType::F32 => sys::PJRT_Buffer_Type_F32,
        DType::BF16 => sys::PJRT_Buffer_Type_BF16,
        DType::F16 => sys::PJRT_Buffer_Type_F16,
        DType::S64 => sys::PJRT_Buffer_Type_S64,
        DType::S32 => sys::PJRT_Buffer_Type_S32,
        DType::S8 => sys::PJRT_Buffer_Type_S8,
        DType::U64 => sys::PJRT_Buffer_Type_U64,
        DType::U32 => sys::PJRT_Buffer_Type_U32,
        DType::U8 => sys::PJRT_Buffer_Type_U8,
        DType::Pred => sys::PJRT_Buffer_Type_PRED,
    }
}

/// `PJRT_Buffer_Type` -> `DType` (error for types the crate does not model).
pub(crate) fn dtype_from_raw(t: sys::PJRT_Buffer_Type) -> Result<DType> {
    Ok(match t {
        sys::PJRT_Buffer_Type_F64 => DType::F64,
        sys::PJRT_Buffer_Type_F32 => DType::F32,
        sys::PJRT_Buffer_Type_BF16 => DType::BF16,
        sys::PJRT_Buffer_Type_F16 => DType::F16,
        sys::PJRT_Buffer_Type_S64 => DType::S64,
        sys::PJRT_Buffer_Type_S32 => DType::S32,
        sys::PJRT_Buffer_Type_S8 => DType::S8,
        sys::PJRT_Buffer_Type_U64 => DType::U64,
        sys::PJRT_Buffer_Type_U32 => DType::U32,
        sys::PJRT_Buffer_Type_U8 => DType::U8,
        sys::PJRT_Buffer_Type_PRED => DType::Pred,
        other => return Err(Error::UnsupportedType(other)),
    })
}

/// A host element type with a fixed little-endian encoding (no transmutes).
pub trait HostElement: Copy + 'static {
    const DTYPE: DType;
    /// Appends the little-endian bytes of `data` to `out`.
    fn extend_le(data: &[Self], out: &mut Vec<u8>);
    /// Decodes one element from exactly `DTYPE.size_bytes()` bytes.
    fn from_le(bytes: &[u8]) -> Self;
}

macro_rules! host_element {
    ($($t:ty => $d:ident),* $(,)?) => {$(
        impl HostElement for $t {
            const DTYPE: DType = DType::$d;
            fn extend_le(data: &[Self], out: &mut Vec<u8>) {
                out.reserve(data.len() * std::mem::size_of::<$t>());
                for v in data {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            fn from_le(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
        }
    )*};
}

host_element! {
    f64 => F64, f32 => F32, bf16 => BF16, f16 => F16,
    i64 => S64, i32 => S32, i8 => S8, u64 => U64, u32 => U32, u8 => U8,
}

impl HostElement for bool {
    const DTYPE: DType = DType::Pred;
    fn extend_le(data: &[Self], out: &mut Vec<u8>) {
        out.extend(data.iter().map(|&b| b as u8));
    }
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

/// Number of elements of an array shape (error on negative dims or overflow).
pub(crate) fn element_count(dims: &[i64]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d).map_err(|_| Error::invalid(format!("negative dimension in {dims:?}")))?;
        acc.checked_mul(d).ok_or_else(|| Error::invalid(format!("shape {dims:?} overflows")))
    })
}

/// An owned device buffer, destroyed on drop.
pub struct Buffer {
    pub(crate) client: Arc<ClientInner>,
    pub(crate) raw: *mut sys::PJRT_Buffer,
}

// SAFETY: PJRT buffers are thread-safe handles.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl Drop for Buffer {
    fn drop(&mut self) {
        let mut args = sys::PJRT_Buffer_Destroy_Args::new();
        args.buffer = self.raw;
        if let Err(e) = call!(&self.client.plugin, PJRT_Buffer_Destroy, &mut args) {
            tracing::warn!("destroying a PJRT buffer: {e}");
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("Buffer");
        if let Ok(d) = self.dtype() {
            s.field("dtype", &d);
        }
        if let Ok(d) = self.dims() {
            s.field("dims", &d);
        }
        s.finish()
    }
}

impl Buffer {
    pub(crate) fn from_raw(client: &Arc<ClientInner>, raw: *mut sys::PJRT_Buffer) -> Buffer {
        Buffer { client: client.clone(), raw }
    }

    /// The array shape.
    pub fn dims(&self) -> Result<Vec<i64>> {
        let mut args = sys::PJRT_Buffer_Dimensions_Args::new();
        args.buffer = self.raw;
        call!(&self.client.plugin, PJRT_Buffer_Dimensions, &mut args)?;
        if args.dims.is_null() {
            return Ok(Vec::new());
        }
        // SAFETY: owned by the buffer, `num_dims` long.
        Ok(unsafe { std::slice::from_raw_parts(args.dims, args.num_dims) }.to_vec())
    }

    /// The element type.
    pub fn dtype(&self) -> Result<DType> {
        let mut args = sys::PJRT_Buffer_ElementType_Args::new();
        args.buffer = self.raw;
        call!(&self.client.plugin, PJRT_Buffer_ElementType, &mut args)?;
        dtype_from_raw(args.type_)
    }

    pub(crate) fn device_raw(&self) -> Result<*mut sys::PJRT_Device> {
        let mut args = sys::PJRT_Buffer_Device_Args::new();
        args.buffer = self.raw;
        call!(&self.client.plugin, PJRT_Buffer_Device, &mut args)?;
        Ok(args.device)
    }

    /// The device the buffer lives on.
    pub fn device(&self) -> Result<Device> {
        Device::from_raw(&self.client, self.device_raw()?)
    }

    /// True once the buffer was deleted or donated to an execution.
    pub fn is_deleted(&self) -> Result<bool> {
        let mut args = sys::PJRT_Buffer_IsDeleted_Args::new();
        args.buffer = self.raw;
        call!(&self.client.plugin, PJRT_Buffer_IsDeleted, &mut args)?;
        Ok(args.is_deleted)
    }

    /// Bytes the buffer occupies on the device.
    pub fn on_device_size(&self) -> Result<usize> {
        let mut args = sys::PJRT_Buffer_OnDeviceSizeInBytes_Args::new();
        args.buffer = self.raw;
        call!(&self.client.plugin, PJRT_Buffer_OnDeviceSizeInBytes, &mut args)?;
        Ok(args.on_device_size_in_bytes)
    }

    /// Copies the buffer to the host as dense row-major little-endian bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let plugin = &self.client.plugin;
        let rank = self.dims()?.len() as i64;
        // Ask for row-major explicitly, so tiled device layouts (TPU) come back dense.
        let minor_to_major: Vec<i64> = (0..rank).rev().collect();
        let mut layout = sys::PJRT_Buffer_MemoryLayout::new();
        layout.type_ = sys::PJRT_Buffer_MemoryLayout_Type_Tiled;
        let mut tiled = sys::PJRT_Buffer_MemoryLayout_Tiled::new();
        tiled.minor_to_major = minor_to_major.as_ptr();
        tiled.minor_to_major_size = minor_to_major.len();
        layout.__bindgen_anon_1.tiled = tiled;

        let mut args = sys::PJRT_Buffer_ToHostBuffer_Args::new();
        args.src = self.raw;
        args.host_layout = &mut layout;
        call!(plugin, PJRT_Buffer_ToHostBuffer, &mut args)?;
        // The size query may still return an event; release it.
        wait_raw(plugin, args.event)?;
        let mut out = vec![0u8; args.dst_size];
        args.dst = out.as_mut_ptr() as *mut _;
        args.event = std::ptr::null_mut();
        call!(plugin, PJRT_Buffer_ToHostBuffer, &mut args)?;
        wait_raw(plugin, args.event)?;
        Ok(out)
    }

    /// Copies the buffer to the host as elements of `T` (the dtype must match).
    pub fn to_vec<T: HostElement>(&self) -> Result<Vec<T>> {
        let dtype = self.dtype()?;
        if dtype != T::DTYPE {
            return Err(Error::invalid(format!(
                "buffer holds {dtype}, but {} was requested",
                T::DTYPE
            )));
        }
        let bytes = self.to_bytes()?;
        let size = dtype.size_bytes();
        Ok(bytes.chunks_exact(size).map(T::from_le).collect())
    }
}

impl Client {
    /// Copies dense row-major little-endian `bytes` of shape `dims` to `device`.
    pub fn buffer_from_bytes(&self, bytes: &[u8], dtype: DType, dims: &[i64], device: &Device) -> Result<Buffer> {
        let n = element_count(dims)?;
        let expected = n.checked_mul(dtype.size_bytes()).ok_or_else(|| Error::invalid("buffer too large"))?;
        if bytes.len() != expected {
            return Err(Error::invalid(format!(
                "{} bytes given for a {dtype}{dims:?} buffer, which needs {expected}",
                bytes.len()
            )));
        }
        if device.client.id != self.inner().id {
            return Err(Error::invalid(format!("device {device} belongs to another client")));
        }
        let plugin = self.plugin();
        let mut args = sys::PJRT_Client_BufferFromHostBuffer_Args::new();
        args.client = self.inner().raw;
        args.data = bytes.as_ptr() as *const _;
        args.type_ = dtype_to_raw(dtype);
        args.dims = dims.as_ptr();
        args.num_dims = dims.len();
        args.byte_strides = std::ptr::null();
        args.num_byte_strides = 0;
        // The plugin copies during the call, so `bytes` need not outlive it.
        args.host_buffer_semantics = sys::PJRT_HostBufferSemantics_kImmutableOnlyDuringCall;
        args.device = device.raw;
        call!(plugin, PJRT_Client_BufferFromHostBuffer, &mut args)?;
        let buffer = Buffer::from_raw(self.inner(), args.buffer);
        wait_raw(plugin, args.done_with_host_buffer)?;
        Ok(buffer)
    }

    /// Copies typed host data of shape `dims` to `device`.
    pub fn buffer_from<T: HostElement>(&self, data: &[T], dims: &[i64], device: &Device) -> Result<Buffer> {
        let mut bytes = Vec::new();
        T::extend_le(data, &mut bytes);
        self.buffer_from_bytes(&bytes, T::DTYPE, dims, device)
    }

    pub fn buffer_from_f32(&self, data: &[f32], dims: &[i64], device: &Device) -> Result<Buffer> {
        self.buffer_from(data, dims, device)
    }

    pub fn buffer_from_f64(&self, data: &[f64], dims: &[i64], device: &Device) -> Result<Buffer> {
        self.buffer_from(data, dims, device)
    }

    pub fn buffer_from_bf16(&self, data: &[bf16], dims: &[i64], device: &Device) -> Result<Buffer> {
        self.buffer_from(data, dims, device)
    }

    pub fn buffer_from_f16(&self, data: &[f16], dims: &[i64], device: &Device) -> Result<Buffer> {
        self.buffer_from(data, dims, device)
    }

    pub fn buffer_from_i32(&self, data: &[i32], dims: &[i64], device: &Device) -> Result<Buffer> {
        self.buffer_from(data, dims, device)
    }

    pub fn buffer_from_i64(&self, data: &[i64], dims: &[i64], device: &Device) -> Result<Buffer> {
        self.buffer_from(data, dims, device)
    }

    pub fn buffer_from_u32(&self, data: &[u32], dims: &[i64], device: &Device) -> Result<Buffer> {
        self.buffer_from(data, dims, device)
    }

    pub fn buffer_from_u8(&self, data: &[u8], dims: &[i64], device: &Device) -> Result<Buffer> {
        self.buffer_from(data, dims, device)
    }

    pub fn buffer_from_bool(&self, data: &[bool], dims: &[i64], device: &Device) -> Result<Buffer> {
        self.buffer_from(data, dims, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_round_trips_through_pjrt_types() {
        for d in [
            DType::F64, DType::F32, DType::BF16, DType::F16, DType::S64, DType::S32, DType::S8,
            DType::U64, DType::U32, DType::U8, DType::Pred,
        ] {
            assert_eq!(dtype_from_raw(dtype_to_raw(d)).unwrap(), d);
        }
        assert_eq!(dtype_to_raw(DType::BF16), 13);
        assert!(matches!(dtype_from_raw(sys::PJRT_Buffer_Type_C64), Err(Error::UnsupportedType(_))));
    }

    #[test]
    fn host_elements_encode_little_endian() {
        let mut out = Vec::new();
        f32::extend_le(&[1.0, -2.5], &mut out);
        assert_eq!(out, [0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]);
        assert_eq!(f32::from_le(&out[4..]), -2.5);
        let mut b = Vec::new();
        bf16::extend_le(&[bf16::from_f32(1.0)], &mut b);
        assert_eq!(b, [0x80, 0x3f]);
        let mut p = Vec::new();
        bool::extend_le(&[true, false], &mut p);
        assert_eq!(p, [1, 0]);
    }

    #[test]
    fn element_count_rejects_negative_dims() {
        assert_eq!(element_count(&[]).unwrap(), 1);
        assert_eq!(element_count(&[2, 3]).unwrap(), 6);
        assert!(element_count(&[2, -1]).is_err());
    }
}
