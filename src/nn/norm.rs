//! RMSNorm variants of Qwen3-Next (reference §2.3): zero-centred `(1+w)`, gated, and L2 normalisation.
//! Statistics are computed in f32; the result is cast back to the compute dtype, as MaxText does.

use super::params::{Init, ParamBuilder};
use crate::ir::{AxisName, DType, Tensor};

/// Mean of x² over `axis`, in f32, keeping the axis name set of the rest.
fn inv_rms(xf: &Tensor, axis: AxisName, eps: f64) -> Tensor {
    let n = xf.dim(axis) as f64;
    let ms = (xf * xf).sum_over(&[axis]).mul_scalar(1.0 / n);
    ms.add_scalar(eps).rsqrt()
}

/// `Qwen3NextRMSNorm`: `y = x / rms(x) * (1 + w)` over `axis`; `w` starts at zero.
pub struct RmsNormOffset {
    scale: Tensor,
    axis: AxisName,
    eps: f64,
}

impl RmsNormOffset {
    pub fn new(pb: &mut ParamBuilder, name: &str, size: i64, axis: AxisName, eps: f64) -> RmsNormOffset {
        let scale = pb.scope(name, |pb| pb.param("scale", &[size], &[axis], &[None], Init::Zeros));
        RmsNormOffset { scale, axis, eps }
    }

    /// x [..., axis] -> same shape: `(x_f32 * rsqrt(mean(x_f32²) + eps)).to(dtype) * (1 + w)`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let dtype = x.dtype();
        let xf = x.convert(DType::F32);
        let y = xf.zip_named(&inv_rms(&xf, self.axis, self.eps), |a, b| a * b).convert(dtype);
        let s = self.scale.add_scalar(1.0);
        y.zip_named(&s, |a, b| a * b)
    }
}

/// `Qwen3NextRMSNormGated` (GDN output norm): `norm(o) * w * silu(z)` over `axis`; `w` starts at one.
pub struct RmsNormGated {
    scale: Tensor,
    axis: AxisName,
    eps: f64,
}

impl RmsNormGated {
    pub fn new(pb: &mut ParamBuilder, size: i64, axis: AxisName, eps: f64) -> RmsNormGated {
        let scale = pb.scope("norm", |pb| pb.scope("rms_norm", |pb| pb.param("scale", &[size], &[axis], &[None], Init::Ones)));
        RmsNormGated { scale, axis, eps }
    }

    /// o, z [..., axis] -> `((o_f32 * rsqrt(mean(o_f32²)+eps)).to(dtype) * w * silu(z_f32)).to(dtype)`.
    pub fn forward(&self, o: &Tensor, z: &Tensor) -> Tensor {
        let dtype = o.dtype();
        let of = o.convert(DType::F32);
        let n = of.zip_named(&inv_rms(&of, self.axis, self.eps), |a, b| a * b).convert(dtype);
        let n = n.zip_named(&self.scale, |a, b| a * b);
        (n.convert(DType::F32) * silu(&z.convert(DType::F32))).convert(dtype)
    }
}

/// `x * rsqrt(sum(x², axis) + eps)` in x's dtype.
pub fn l2norm(x: &Tensor, axis: AxisName, eps: f64) -> Tensor {
    let ss = (x * x).sum_over(&[axis]);
    x.zip_named(&ss.add_scalar(eps).rsqrt(), |a, b| a * b)
}

/// `x * sigmoid(x)`.
pub fn silu(x: &Tensor) -> Tensor {
    x * &x.sigmoid()
}

/// `log(1 + exp(x))`, stable for large |x|: `max(x, 0) + log1p(exp(-|x|))`.
pub fn softplus(x: &Tensor) -> Tensor {
    let pos = x.max(&x.full_like(0.0));
    let tail = x.abs().neg().exp().unary(crate::ir::UnaryOp::Log1p);
    &pos + &tail
}
