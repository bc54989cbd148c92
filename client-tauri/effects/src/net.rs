//! A small TFLite interpreter: float32 (weights stored as float16 are widened once at load),
//! batch 1, NHWC, the operators a MobileNet-style segmentation network uses — convolution,
//! depthwise convolution, average pooling and global mean, add and multiply with per-channel
//! broadcast, ReLU, hard swish, logistic, bilinear resize, and MediaPipe's
//! `Convolution2DTransposeBias`. Shapes are fixed at load; buffers are kept between runs.

use crate::EffectsError;
use crate::tflite::{self, Activation, OpDecl, Options, Padding, op};

#[derive(Debug, Clone, Copy)]
struct Shape {
    h: usize,
    w: usize,
    c: usize,
}

impl Shape {
    fn of(dims: &[usize]) -> Result<Shape, EffectsError> {
        match dims {
            [1, h, w, c] => Ok(Shape {
                h: *h,
                w: *w,
                c: *c,
            }),
            [c] => Ok(Shape { h: 1, w: 1, c: *c }),
            other => Err(unsupported(format!("a tensor of shape {other:?}"))),
        }
    }
    fn len(&self) -> usize {
        self.h * self.w * self.c
    }
}

fn unsupported(what: String) -> EffectsError {
    EffectsError::Model(format!("unsupported by the interpreter: {what}"))
}

/// A spatial window: kernel, stride, dilation and the padding before the first row/column.
#[derive(Debug, Clone, Copy)]
struct Window {
    k: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    pad: (usize, usize),
}

impl Window {
    fn new(
        input: Shape,
        output: Shape,
        k: (usize, usize),
        stride: (usize, usize),
        dilation: (usize, usize),
        padding: Padding,
    ) -> Window {
        let pad = |inp: usize, out: usize, k: usize, s: usize, d: usize| match padding {
            Padding::Valid => 0,
            Padding::Same => {
                ((out.saturating_sub(1)) * s + (k - 1) * d + 1).saturating_sub(inp) / 2
            }
        };
        Window {
            k,
            stride,
            dilation,
            pad: (
                pad(input.h, output.h, k.0, stride.0, dilation.0),
                pad(input.w, output.w, k.1, stride.1, dilation.1),
            ),
        }
    }
    /// The input row (or column) a kernel tap reads for an output row, if inside.
    fn tap(
        out: usize,
        k: usize,
        stride: usize,
        dilation: usize,
        pad: usize,
        size: usize,
    ) -> Option<usize> {
        (out * stride + k * dilation)
            .checked_sub(pad)
            .filter(|i| *i < size)
    }
}

#[derive(Debug)]
enum Step {
    /// `weights` as [kh][kw][cin][cout] (transposed at load, so the inner loop runs over cout).
    Conv {
        weights: Vec<f32>,
        bias: Vec<f32>,
        win: Window,
        act: Activation,
    },
    /// `weights` as [kh][kw][c].
    Depthwise {
        weights: Vec<f32>,
        bias: Vec<f32>,
        win: Window,
        act: Activation,
    },
    AvgPool {
        win: Window,
        act: Activation,
    },
    Mean,
    Add(Activation),
    Mul(Activation),
    Relu,
    HardSwish,
    Logistic,
    Resize {
        align_corners: bool,
        half_pixel: bool,
    },
    /// `weights` as [kh][kw][cin][cout].
    TransposeConv {
        weights: Vec<f32>,
        bias: Vec<f32>,
        k: (usize, usize),
        stride: (usize, usize),
        pad: (usize, usize),
    },
}

impl Step {
    fn kind(&self) -> &'static str {
        match self {
            Step::Conv { win, .. } if win.k == (1, 1) => "conv 1x1",
            Step::Conv { .. } => "conv",
            Step::Depthwise { .. } => "depthwise",
            Step::AvgPool { .. } => "average pool",
            Step::Mean => "mean",
            Step::Add(_) => "add",
            Step::Mul(_) => "mul",
            Step::Relu => "relu",
            Step::HardSwish => "hard swish",
            Step::Logistic => "logistic",
            Step::Resize { .. } => "resize",
            Step::TransposeConv { .. } => "transpose conv",
        }
    }
}

#[derive(Debug)]
struct Node {
    step: Step,
    inputs: Vec<usize>,
    output: usize,
}

/// A loaded model, ready to run.
#[derive(Debug)]
pub struct Net {
    nodes: Vec<Node>,
    shapes: Vec<Option<Shape>>,
    values: Vec<Vec<f32>>,
    input: usize,
    output: usize,
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exp = u32::from((bits >> 10) & 0x1f);
    let frac = u32::from(bits & 0x3ff);
    let magnitude = match (exp, frac) {
        (0, 0) => 0,
        // Subnormal: a normal f32.
        (0, f) => {
            let v = f as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, f) => 0x7f80_0000 | (f << 13),
        (e, f) => ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(sign | magnitude)
}

impl Net {
    /// Loads a TFLite model's bytes.
    pub fn load(bytes: &[u8]) -> Result<Net, EffectsError> {
        let graph = tflite::parse(bytes)?;
        let n = graph.tensors.len();
        let index = |i: i32| -> Result<usize, EffectsError> {
            usize::try_from(i)
                .ok()
                .filter(|i| *i < n)
                .ok_or_else(|| EffectsError::Model(format!("tensor index {i}")))
        };
        // Constants, widened to f32.
        let mut consts: Vec<Option<Vec<f32>>> = graph
            .tensors
            .iter()
            .map(|t| match (t.dtype, t.data.is_empty()) {
                (_, true) => None,
                (0, false) => Some(
                    t.data
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                (1, false) => Some(
                    t.data
                        .chunks_exact(2)
                        .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                        .collect(),
                ),
                (2, false) => Some(
                    t.data
                        .chunks_exact(4)
                        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        let mut shapes: Vec<Option<Shape>> = graph
            .tensors
            .iter()
            .map(|t| Shape::of(&t.shape).ok())
            .collect();
        let shape = |shapes: &[Option<Shape>], i: usize| {
            shapes[i].ok_or_else(|| unsupported(format!("tensor {i}'s shape")))
        };
        let mut nodes = Vec::new();
        for decl in &graph.ops {
            let ins = decl
                .inputs
                .iter()
                .map(|i| if *i < 0 { Ok(usize::MAX) } else { index(*i) })
                .collect::<Result<Vec<_>, _>>()?;
            let out = index(
                *decl
                    .outputs
                    .first()
                    .ok_or_else(|| unsupported("an operator without output".into()))?,
            )?;
            let input = |k: usize| {
                ins.get(k)
                    .copied()
                    .filter(|i| *i != usize::MAX)
                    .ok_or_else(|| unsupported(format!("operator {} without input {k}", decl.code)))
            };
            let constant =
                |consts: &[Option<Vec<f32>>], k: usize| -> Result<Vec<f32>, EffectsError> {
                    consts[input(k)?].clone().ok_or_else(|| {
                        unsupported(format!(
                            "operator {}'s input {k} is not constant",
                            decl.code
                        ))
                    })
                };
            if decl.code == op::DEQUANTIZE {
                consts[out] = Some(constant(&consts, 0)?);
                continue;
            }
            let x = input(0)?;
            let (si, so) = (shape(&shapes, x)?, shape(&shapes, out)?);
            let step = match (decl.code, &decl.options) {
                (
                    op::CONV_2D,
                    Options::Conv {
                        padding,
                        stride,
                        dilation,
                        act,
                    },
                ) => {
                    let w = constant(&consts, 1)?;
                    let dims = &graph.tensors[input(1)?].shape;
                    let [co, kh, kw, ci] = dims[..] else {
                        return Err(unsupported(format!("conv weights {dims:?}")));
                    };
                    if ci != si.c || co != so.c {
                        return Err(unsupported(format!(
                            "conv channels {dims:?} for {si:?} -> {so:?}"
                        )));
                    }
                    let bias = bias(&consts, &ins, co)?;
                    Step::Conv {
                        weights: to_hwio(&w, [co, kh, kw, ci]),
                        bias,
                        win: Window::new(si, so, (kh, kw), *stride, *dilation, *padding),
                        act: *act,
                    }
                }
                (
                    op::DEPTHWISE_CONV_2D,
                    Options::Depthwise {
                        padding,
                        stride,
                        dilation,
                        multiplier,
                        act,
                    },
                ) => {
                    if *multiplier != 1 || si.c != so.c {
                        return Err(unsupported(format!("depth multiplier {multiplier}")));
                    }
                    let w = constant(&consts, 1)?;
                    let dims = &graph.tensors[input(1)?].shape;
                    let [1, kh, kw, c] = dims[..] else {
                        return Err(unsupported(format!("depthwise weights {dims:?}")));
                    };
                    if c != si.c {
                        return Err(unsupported(format!("depthwise channels {dims:?}")));
                    }
                    Step::Depthwise {
                        weights: w,
                        bias: bias(&consts, &ins, c)?,
                        win: Window::new(si, so, (kh, kw), *stride, *dilation, *padding),
                        act: *act,
                    }
                }
                (
                    op::AVERAGE_POOL_2D,
                    Options::Pool {
                        padding,
                        stride,
                        filter,
                        act,
                    },
                ) => Step::AvgPool {
                    win: Window::new(si, so, *filter, *stride, (1, 1), *padding),
                    act: *act,
                },
                (op::MEAN, Options::Reducer { .. }) => {
                    let axes = constant(&consts, 1)?;
                    if axes != [1.0, 2.0] || so.h != 1 || so.w != 1 {
                        return Err(unsupported(format!("a mean over axes {axes:?}")));
                    }
                    Step::Mean
                }
                (op::ADD, Options::Act(a)) => Step::Add(*a),
                (op::MUL, Options::Act(a)) => Step::Mul(*a),
                (op::RELU, _) => Step::Relu,
                (op::HARD_SWISH, _) => Step::HardSwish,
                (op::LOGISTIC, _) => Step::Logistic,
                (
                    op::RESIZE_BILINEAR,
                    Options::Resize {
                        align_corners,
                        half_pixel_centers,
                    },
                ) => Step::Resize {
                    align_corners: *align_corners,
                    half_pixel: *half_pixel_centers,
                },
                (op::CUSTOM, _) if decl.custom == "Convolution2DTransposeBias" => {
                    transpose_conv(decl, &consts, &graph.tensors, &ins, si, so)?
                }
                (code, _) => return Err(unsupported(format!("operator {code} {}", decl.custom))),
            };
            let inputs = match step {
                Step::Add(_) | Step::Mul(_) => vec![x, input(1)?],
                _ => vec![x],
            };
            for i in &inputs {
                if shapes[*i].is_none() {
                    return Err(unsupported(format!("tensor {i}'s shape")));
                }
            }
            shapes[out] = Some(so);
            nodes.push(Node {
                step,
                inputs,
                output: out,
            });
        }
        let input = index(
            *graph
                .inputs
                .first()
                .ok_or_else(|| unsupported("a model without input".into()))?,
        )?;
        let output = index(
            *graph
                .outputs
                .first()
                .ok_or_else(|| unsupported("a model without output".into()))?,
        )?;
        let mut values: Vec<Vec<f32>> = consts.into_iter().map(Option::unwrap_or_default).collect();
        for node in &nodes {
            values[node.output] = vec![0.0; shape(&shapes, node.output)?.len()];
        }
        values[input] = vec![0.0; shape(&shapes, input)?.len()];
        Ok(Net {
            nodes,
            shapes,
            values,
            input,
            output,
        })
    }

    /// The input's height, width and channels.
    pub fn input_shape(&self) -> (usize, usize, usize) {
        let s = self.shapes[self.input].unwrap_or(Shape { h: 0, w: 0, c: 0 });
        (s.h, s.w, s.c)
    }

    /// The output's height, width and channels.
    pub fn output_shape(&self) -> (usize, usize, usize) {
        let s = self.shapes[self.output].unwrap_or(Shape { h: 0, w: 0, c: 0 });
        (s.h, s.w, s.c)
    }

    /// The input buffer to fill (NHWC, as [`Net::input_shape`] says).
    pub fn input_mut(&mut self) -> &mut [f32] {
        &mut self.values[self.input]
    }

    /// Runs the graph on what is in the input buffer; the output, as [`Net::output_shape`] says.
    pub fn run(&mut self) -> &[f32] {
        self.run_timed(&mut |_, _| {});
        &self.values[self.output]
    }

    /// Runs the graph and returns the milliseconds each kind of operator took (for the
    /// benchmark), most first.
    pub fn profile(&mut self) -> Vec<(&'static str, f64)> {
        let mut by_kind: Vec<(&'static str, f64)> = Vec::new();
        self.run_timed(
            &mut |kind, ms| match by_kind.iter_mut().find(|(k, _)| *k == kind) {
                Some(e) => e.1 += ms,
                None => by_kind.push((kind, ms)),
            },
        );
        by_kind.sort_by(|a, b| b.1.total_cmp(&a.1));
        by_kind
    }

    fn run_timed(&mut self, on_step: &mut dyn FnMut(&'static str, f64)) {
        for node in &self.nodes {
            let started = std::time::Instant::now();
            let mut out = std::mem::take(&mut self.values[node.output]);
            let si = self.shapes[node.inputs[0]].unwrap_or(Shape { h: 0, w: 0, c: 0 });
            let so = self.shapes[node.output].unwrap_or(Shape { h: 0, w: 0, c: 0 });
            let x = &self.values[node.inputs[0]];
            match &node.step {
                Step::Conv {
                    weights,
                    bias,
                    win,
                    act,
                } => conv(x, si, &mut out, so, weights, bias, win, *act),
                Step::Depthwise {
                    weights,
                    bias,
                    win,
                    act,
                } => depthwise(x, si, &mut out, so, weights, bias, win, *act),
                Step::AvgPool { win, act } => avg_pool(x, si, &mut out, so, win, *act),
                Step::Mean => mean(x, si, &mut out),
                Step::Add(a) => binary(
                    x,
                    &self.values[node.inputs[1]],
                    &mut out,
                    so.c,
                    *a,
                    |p, q| p + q,
                ),
                Step::Mul(a) => binary(
                    x,
                    &self.values[node.inputs[1]],
                    &mut out,
                    so.c,
                    *a,
                    |p, q| p * q,
                ),
                Step::Relu => out.iter_mut().zip(x).for_each(|(o, v)| *o = v.max(0.0)),
                Step::HardSwish => out
                    .iter_mut()
                    .zip(x)
                    .for_each(|(o, v)| *o = v * (v + 3.0).clamp(0.0, 6.0) / 6.0),
                Step::Logistic => out
                    .iter_mut()
                    .zip(x)
                    .for_each(|(o, v)| *o = 1.0 / (1.0 + (-v).exp())),
                Step::Resize {
                    align_corners,
                    half_pixel,
                } => resize(x, si, &mut out, so, *align_corners, *half_pixel),
                Step::TransposeConv {
                    weights,
                    bias,
                    k,
                    stride,
                    pad,
                } => transpose(x, si, &mut out, so, weights, bias, *k, *stride, *pad),
            }
            self.values[node.output] = out;
            on_step(node.step.kind(), started.elapsed().as_secs_f64() * 1000.0);
        }
    }
}

fn bias(consts: &[Option<Vec<f32>>], ins: &[usize], c: usize) -> Result<Vec<f32>, EffectsError> {
    match ins.get(2) {
        Some(b) if *b != usize::MAX => {
            let b = consts[*b]
                .clone()
                .ok_or_else(|| unsupported("a bias that is not constant".into()))?;
            if b.len() == c {
                Ok(b)
            } else {
                Err(unsupported(format!(
                    "a bias of {} for {c} channels",
                    b.len()
                )))
            }
        }
        _ => Ok(vec![0.0; c]),
    }
}

fn transpose_conv(
    decl: &OpDecl,
    consts: &[Option<Vec<f32>>],
    tensors: &[tflite::TensorDecl],
    ins: &[usize],
    si: Shape,
    so: Shape,
) -> Result<Step, EffectsError> {
    // MediaPipe's TfLiteTransposeConvParams as raw ints: padding, stride_w, stride_h.
    let p: Vec<i32> = decl
        .custom_options
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let [padding, sw, sh, ..] = p[..] else {
        return Err(unsupported("transpose convolution options".into()));
    };
    let (sw, sh) = (
        usize::try_from(sw).unwrap_or(0),
        usize::try_from(sh).unwrap_or(0),
    );
    let w_index = ins
        .get(1)
        .copied()
        .filter(|i| *i != usize::MAX)
        .ok_or_else(|| unsupported("transpose weights".into()))?;
    let w = consts[w_index]
        .clone()
        .ok_or_else(|| unsupported("transpose weights not constant".into()))?;
    let dims = &tensors[w_index].shape;
    let [co, kh, kw, ci] = dims[..] else {
        return Err(unsupported(format!("transpose weights {dims:?}")));
    };
    if ci != si.c || co != so.c || sw == 0 || sh == 0 {
        return Err(unsupported(format!("transpose convolution {dims:?}")));
    }
    // TfLitePadding: 1 same, 2 valid.
    let pad = |inp: usize, out: usize, k: usize, s: usize| {
        if padding == 2 {
            0
        } else {
            ((inp - 1) * s + k).saturating_sub(out) / 2
        }
    };
    Ok(Step::TransposeConv {
        weights: to_hwio(&w, [co, kh, kw, ci]),
        bias: bias(consts, ins, co)?,
        k: (kh, kw),
        stride: (sh, sw),
        pad: (pad(si.h, so.h, kh, sh), pad(si.w, so.w, kw, sw)),
    })
}

/// Weights from TFLite's [cout][kh][kw][cin] to [kh][kw][cin][cout], so the inner loops of
/// the convolutions run over the output channels.
fn to_hwio(w: &[f32], [co, kh, kw, ci]: [usize; 4]) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for o in 0..co {
        for y in 0..kh {
            for x in 0..kw {
                for i in 0..ci {
                    t[((y * kw + x) * ci + i) * co + o] = w[((o * kh + y) * kw + x) * ci + i];
                }
            }
        }
    }
    t
}

fn activate(v: &mut [f32], act: Activation) {
    match act {
        Activation::None => {}
        Activation::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
        Activation::Relu6 => v.iter_mut().for_each(|x| *x = x.clamp(0.0, 6.0)),
    }
}

#[allow(clippy::too_many_arguments)]
fn conv(
    x: &[f32],
    si: Shape,
    out: &mut [f32],
    so: Shape,
    w: &[f32],
    bias: &[f32],
    win: &Window,
    act: Activation,
) {
    let (ci, co) = (si.c, so.c);
    if win.k == (1, 1) && win.stride == (1, 1) && (si.h, si.w) == (so.h, so.w) {
        // Pointwise: a matrix product, pixel by pixel; the common widths with the
        // accumulators in registers.
        match co {
            8 => return pointwise::<8>(x, ci, out, w, bias, act),
            16 => return pointwise::<16>(x, ci, out, w, bias, act),
            24 => return pointwise::<24>(x, ci, out, w, bias, act),
            32 => return pointwise::<32>(x, ci, out, w, bias, act),
            _ => {}
        }
        for (o, px) in out.chunks_exact_mut(co).zip(x.chunks_exact(ci)) {
            o.copy_from_slice(bias);
            for (a, row) in px.iter().zip(w.chunks_exact(co)) {
                for (acc, wv) in o.iter_mut().zip(row) {
                    *acc += a * wv;
                }
            }
            activate(o, act);
        }
        return;
    }
    // The window's inputs gathered into a patch (zeros outside the picture), then the same
    // product as a pointwise convolution: the taps are worked out once per pixel, not per
    // multiply.
    let mut patch = vec![0.0f32; win.k.0 * win.k.1 * ci];
    for oy in 0..so.h {
        for ox in 0..so.w {
            for ky in 0..win.k.0 {
                let iy = Window::tap(oy, ky, win.stride.0, win.dilation.0, win.pad.0, si.h);
                for kx in 0..win.k.1 {
                    let dst = &mut patch[(ky * win.k.1 + kx) * ci..][..ci];
                    match (
                        iy,
                        Window::tap(ox, kx, win.stride.1, win.dilation.1, win.pad.1, si.w),
                    ) {
                        (Some(iy), Some(ix)) => {
                            dst.copy_from_slice(&x[(iy * si.w + ix) * ci..][..ci])
                        }
                        _ => dst.fill(0.0),
                    }
                }
            }
            let o = &mut out[(oy * so.w + ox) * co..][..co];
            o.copy_from_slice(bias);
            for (a, row) in patch.iter().zip(w.chunks_exact(co)) {
                for (acc, wv) in o.iter_mut().zip(row) {
                    *acc += a * wv;
                }
            }
            activate(o, act);
        }
    }
}

/// A pointwise convolution to `CO` channels, two pixels at a time (each weight row loaded
/// once for both).
fn pointwise<const CO: usize>(
    x: &[f32],
    ci: usize,
    out: &mut [f32],
    w: &[f32],
    bias: &[f32],
    act: Activation,
) {
    let mut b = [0.0f32; CO];
    b.copy_from_slice(bias);
    let mut pixels = x.chunks_exact(2 * ci);
    let mut outs = out.chunks_exact_mut(2 * CO);
    for (px, o) in (&mut pixels).zip(&mut outs) {
        let (p0, p1) = px.split_at(ci);
        let (mut a0, mut a1) = (b, b);
        for ((v0, v1), row) in p0.iter().zip(p1).zip(w.chunks_exact(CO)) {
            for k in 0..CO {
                a0[k] += v0 * row[k];
                a1[k] += v1 * row[k];
            }
        }
        o[..CO].copy_from_slice(&a0);
        o[CO..].copy_from_slice(&a1);
        activate(o, act);
    }
    // An odd pixel count leaves one.
    let rest = pixels.remainder();
    if let (true, Some(o)) = (rest.len() == ci, outs.into_remainder().get_mut(..CO)) {
        let mut acc = b;
        for (v, row) in rest.iter().zip(w.chunks_exact(CO)) {
            for k in 0..CO {
                acc[k] += v * row[k];
            }
        }
        o.copy_from_slice(&acc);
        activate(o, act);
    }
}

/// A dot product in eight lanes (so it vectorises; the order of the sum differs from a
/// plain loop's by rounding only).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[allow(clippy::too_many_arguments)]
fn depthwise(
    x: &[f32],
    si: Shape,
    out: &mut [f32],
    so: Shape,
    w: &[f32],
    bias: &[f32],
    win: &Window,
    act: Activation,
) {
    let c = si.c;
    for oy in 0..so.h {
        for ox in 0..so.w {
            let o = &mut out[(oy * so.w + ox) * c..][..c];
            o.copy_from_slice(bias);
            for ky in 0..win.k.0 {
                let Some(iy) = Window::tap(oy, ky, win.stride.0, win.dilation.0, win.pad.0, si.h)
                else {
                    continue;
                };
                for kx in 0..win.k.1 {
                    let Some(ix) =
                        Window::tap(ox, kx, win.stride.1, win.dilation.1, win.pad.1, si.w)
                    else {
                        continue;
                    };
                    let px = &x[(iy * si.w + ix) * c..][..c];
                    let wk = &w[(ky * win.k.1 + kx) * c..][..c];
                    for ((acc, a), wv) in o.iter_mut().zip(px).zip(wk) {
                        *acc += a * wv;
                    }
                }
            }
            activate(o, act);
        }
    }
}

fn avg_pool(x: &[f32], si: Shape, out: &mut [f32], so: Shape, win: &Window, act: Activation) {
    let c = si.c;
    for oy in 0..so.h {
        for ox in 0..so.w {
            let o = &mut out[(oy * so.w + ox) * c..][..c];
            o.fill(0.0);
            let mut n = 0usize;
            for ky in 0..win.k.0 {
                let Some(iy) = Window::tap(oy, ky, win.stride.0, 1, win.pad.0, si.h) else {
                    continue;
                };
                for kx in 0..win.k.1 {
                    let Some(ix) = Window::tap(ox, kx, win.stride.1, 1, win.pad.1, si.w) else {
                        continue;
                    };
                    n += 1;
                    for (acc, a) in o.iter_mut().zip(&x[(iy * si.w + ix) * c..][..c]) {
                        *acc += a;
                    }
                }
            }
            let inv = 1.0 / n.max(1) as f32;
            o.iter_mut().for_each(|v| *v *= inv);
            activate(o, act);
        }
    }
}

fn mean(x: &[f32], si: Shape, out: &mut [f32]) {
    out.fill(0.0);
    for px in x.chunks_exact(si.c) {
        for (acc, a) in out.iter_mut().zip(px) {
            *acc += a;
        }
    }
    let inv = 1.0 / (si.h * si.w).max(1) as f32;
    out.iter_mut().for_each(|v| *v *= inv);
}

/// Elementwise with broadcasting of a per-channel vector or a scalar on either side.
fn binary(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    c: usize,
    act: Activation,
    f: impl Fn(f32, f32) -> f32,
) {
    let n = out.len();
    match (a.len(), b.len()) {
        (x, y) if x == n && y == n => {
            out.iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(o, (p, q))| *o = f(*p, *q));
        }
        (x, y) if x == n && y == c => {
            for (o, p) in out.chunks_exact_mut(c).zip(a.chunks_exact(c)) {
                o.iter_mut()
                    .zip(p.iter().zip(b))
                    .for_each(|(o, (p, q))| *o = f(*p, *q));
            }
        }
        (x, y) if x == c && y == n => {
            for (o, q) in out.chunks_exact_mut(c).zip(b.chunks_exact(c)) {
                o.iter_mut()
                    .zip(a.iter().zip(q))
                    .for_each(|(o, (p, q))| *o = f(*p, *q));
            }
        }
        _ => {
            let at = |v: &[f32], i: usize| -> f32 {
                match v.len() {
                    1 => v[0],
                    len if len == n => v[i],
                    _ => v[i % c],
                }
            };
            for (i, o) in out.iter_mut().enumerate() {
                *o = f(at(a, i), at(b, i));
            }
        }
    }
    activate(out, act);
}

fn resize(x: &[f32], si: Shape, out: &mut [f32], so: Shape, align_corners: bool, half_pixel: bool) {
    let c = si.c;
    let scale = |inp: usize, outp: usize| {
        if align_corners && outp > 1 {
            (inp - 1) as f32 / (outp - 1) as f32
        } else {
            inp as f32 / outp as f32
        }
    };
    let (sy, sx) = (scale(si.h, so.h), scale(si.w, so.w));
    let source = |o: usize, s: f32, size: usize| -> (usize, usize, f32) {
        let v = if half_pixel {
            ((o as f32 + 0.5) * s - 0.5).max(0.0)
        } else {
            o as f32 * s
        };
        let lo = (v.floor() as usize).min(size - 1);
        let hi = (lo + 1).min(size - 1);
        (lo, hi, v - lo as f32)
    };
    for oy in 0..so.h {
        let (y0, y1, fy) = source(oy, sy, si.h);
        for ox in 0..so.w {
            let (x0, x1, fx) = source(ox, sx, si.w);
            let o = &mut out[(oy * so.w + ox) * c..][..c];
            let p = |y: usize, xx: usize| &x[(y * si.w + xx) * c..][..c];
            let (a, b, d, e) = (p(y0, x0), p(y0, x1), p(y1, x0), p(y1, x1));
            for k in 0..c {
                let top = a[k] + (b[k] - a[k]) * fx;
                let bottom = d[k] + (e[k] - d[k]) * fx;
                o[k] = top + (bottom - top) * fy;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn transpose(
    x: &[f32],
    si: Shape,
    out: &mut [f32],
    so: Shape,
    w: &[f32],
    bias: &[f32],
    k: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
) {
    let (ci, co) = (si.c, so.c);
    for px in out.chunks_exact_mut(co) {
        px.copy_from_slice(bias);
    }
    for iy in 0..si.h {
        for ix in 0..si.w {
            let input = &x[(iy * si.w + ix) * ci..][..ci];
            for ky in 0..k.0 {
                let Some(oy) = (iy * stride.0 + ky)
                    .checked_sub(pad.0)
                    .filter(|v| *v < so.h)
                else {
                    continue;
                };
                for kx in 0..k.1 {
                    let Some(ox) = (ix * stride.1 + kx)
                        .checked_sub(pad.1)
                        .filter(|v| *v < so.w)
                    else {
                        continue;
                    };
                    let o = &mut out[(oy * so.w + ox) * co..][..co];
                    let wk = &w[(ky * k.1 + kx) * ci * co..][..ci * co];
                    if co == 1 {
                        // One output channel (a mask): a dot product per tap.
                        o[0] += dot(input, wk);
                        continue;
                    }
                    for (a, row) in input.iter().zip(wk.chunks_exact(co)) {
                        for (acc, wv) in o.iter_mut().zip(row) {
                            *acc += a * wv;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn half_floats_widen_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
