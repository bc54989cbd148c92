//! Just enough of the TFLite file format (a FlatBuffer, `tensorflow/lite/schema/schema.fbs`)
//! to read a model's graph: its tensors, constant buffers and operators with their options.
//! Every read is bounds-checked; a malformed file is an error, never a panic.

use crate::EffectsError;

/// A FlatBuffer's bytes, read with bounds checks.
#[derive(Clone, Copy)]
pub(crate) struct Buf<'a>(pub &'a [u8]);

fn bad(what: &str) -> EffectsError {
    EffectsError::Model(format!("malformed model: {what}"))
}

impl<'a> Buf<'a> {
    fn bytes<const N: usize>(&self, at: usize) -> Result<[u8; N], EffectsError> {
        self.0
            .get(at..at.checked_add(N).ok_or_else(|| bad("offset"))?)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("read past the end"))
    }
    fn u8(&self, at: usize) -> Result<u8, EffectsError> {
        Ok(self.bytes::<1>(at)?[0])
    }
    fn u16(&self, at: usize) -> Result<u16, EffectsError> {
        Ok(u16::from_le_bytes(self.bytes(at)?))
    }
    fn u32(&self, at: usize) -> Result<u32, EffectsError> {
        Ok(u32::from_le_bytes(self.bytes(at)?))
    }
    fn i32(&self, at: usize) -> Result<i32, EffectsError> {
        Ok(i32::from_le_bytes(self.bytes(at)?))
    }
    /// Follows the unsigned offset stored at `at`.
    fn follow(&self, at: usize) -> Result<usize, EffectsError> {
        at.checked_add(self.u32(at)? as usize)
            .filter(|p| *p < self.0.len())
            .ok_or_else(|| bad("offset out of the file"))
    }

    /// The root table.
    pub fn root(self) -> Result<Table<'a>, EffectsError> {
        Ok(Table {
            buf: self,
            at: self.follow(0)?,
        })
    }
}

/// A table: fields by their index in the schema.
#[derive(Clone, Copy)]
pub(crate) struct Table<'a> {
    buf: Buf<'a>,
    at: usize,
}

impl<'a> Table<'a> {
    /// Where field `index` is stored, if present.
    fn field(&self, index: usize) -> Result<Option<usize>, EffectsError> {
        let soff = self.buf.i32(self.at)?;
        let vt = (self.at as i64 - i64::from(soff)) as usize;
        let vt_len = self.buf.u16(vt)? as usize;
        let slot = 4 + 2 * index;
        if slot + 2 > vt_len {
            return Ok(None);
        }
        match self.buf.u16(vt + slot)? {
            0 => Ok(None),
            off => Ok(Some(self.at + off as usize)),
        }
    }
    pub fn u8(&self, index: usize, default: u8) -> Result<u8, EffectsError> {
        self.field(index)?.map_or(Ok(default), |p| self.buf.u8(p))
    }
    pub fn i32(&self, index: usize, default: i32) -> Result<i32, EffectsError> {
        self.field(index)?.map_or(Ok(default), |p| self.buf.i32(p))
    }
    pub fn u32(&self, index: usize, default: u32) -> Result<u32, EffectsError> {
        self.field(index)?.map_or(Ok(default), |p| self.buf.u32(p))
    }
    pub fn table(&self, index: usize) -> Result<Option<Table<'a>>, EffectsError> {
        self.field(index)?
            .map(|p| {
                Ok(Table {
                    buf: self.buf,
                    at: self.buf.follow(p)?,
                })
            })
            .transpose()
    }
    /// A vector field: its element count and where the first element is.
    fn vector(&self, index: usize) -> Result<Option<(usize, usize)>, EffectsError> {
        let Some(p) = self.field(index)? else {
            return Ok(None);
        };
        let v = self.buf.follow(p)?;
        let n = self.buf.u32(v)? as usize;
        Ok(Some((n, v + 4)))
    }
    pub fn bytes(&self, index: usize) -> Result<&'a [u8], EffectsError> {
        match self.vector(index)? {
            None => Ok(&[]),
            Some((n, at)) => self
                .buf
                .0
                .get(at..at + n)
                .ok_or_else(|| bad("vector past the end")),
        }
    }
    pub fn ints(&self, index: usize) -> Result<Vec<i32>, EffectsError> {
        match self.vector(index)? {
            None => Ok(Vec::new()),
            Some((n, at)) => (0..n).map(|i| self.buf.i32(at + 4 * i)).collect(),
        }
    }
    pub fn tables(&self, index: usize) -> Result<Vec<Table<'a>>, EffectsError> {
        match self.vector(index)? {
            None => Ok(Vec::new()),
            Some((n, at)) => (0..n)
                .map(|i| {
                    Ok(Table {
                        buf: self.buf,
                        at: self.buf.follow(at + 4 * i)?,
                    })
                })
                .collect(),
        }
    }
    pub fn string(&self, index: usize) -> Result<String, EffectsError> {
        let Some(p) = self.field(index)? else {
            return Ok(String::new());
        };
        let s = self.buf.follow(p)?;
        let n = self.buf.u32(s)? as usize;
        let b = self
            .buf
            .0
            .get(s + 4..s + 4 + n)
            .ok_or_else(|| bad("string past the end"))?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }
}

/// Builtin operator codes (`BuiltinOperator` in the schema) this interpreter runs.
pub(crate) mod op {
    pub const ADD: i32 = 0;
    pub const AVERAGE_POOL_2D: i32 = 1;
    pub const CONV_2D: i32 = 3;
    pub const DEPTHWISE_CONV_2D: i32 = 4;
    pub const DEQUANTIZE: i32 = 6;
    pub const LOGISTIC: i32 = 14;
    pub const MUL: i32 = 18;
    pub const RELU: i32 = 19;
    pub const RESIZE_BILINEAR: i32 = 23;
    pub const CUSTOM: i32 = 32;
    pub const MEAN: i32 = 40;
    pub const HARD_SWISH: i32 = 117;
}

/// A tensor as the file declares it.
#[derive(Debug, Clone)]
pub(crate) struct TensorDecl {
    pub shape: Vec<usize>,
    /// `TensorType`: 0 float32, 1 float16, 2 int32.
    pub dtype: u8,
    /// Its constant data (empty for activations).
    pub data: Vec<u8>,
}

/// Padding and fused activation, as the schema's enums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Padding {
    Same,
    Valid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    None,
    Relu,
    Relu6,
}

/// The options an operator here needs, read with the types the schema gives them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Options {
    None,
    Conv {
        padding: Padding,
        stride: (usize, usize),
        dilation: (usize, usize),
        act: Activation,
    },
    Depthwise {
        padding: Padding,
        stride: (usize, usize),
        dilation: (usize, usize),
        multiplier: usize,
        act: Activation,
    },
    Pool {
        padding: Padding,
        stride: (usize, usize),
        filter: (usize, usize),
        act: Activation,
    },
    Act(Activation),
    Reducer {
        keep_dims: bool,
    },
    Resize {
        align_corners: bool,
        half_pixel_centers: bool,
    },
}

/// An operator as the file declares it.
#[derive(Debug, Clone)]
pub(crate) struct OpDecl {
    pub code: i32,
    pub custom: String,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub options: Options,
    pub custom_options: Vec<u8>,
}

/// A model's first subgraph.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    pub tensors: Vec<TensorDecl>,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub ops: Vec<OpDecl>,
}

pub(crate) fn parse(bytes: &[u8]) -> Result<Graph, EffectsError> {
    if bytes.len() < 8 || &bytes[4..8] != b"TFL3" {
        return Err(EffectsError::Model(
            "not a TFLite model (no TFL3 identifier)".into(),
        ));
    }
    let model = Buf(bytes).root()?;
    // Model: operator_codes 1, subgraphs 2, buffers 4.
    let codes = model
        .tables(1)?
        .iter()
        .map(|c| {
            // OperatorCode: deprecated_builtin_code 0 (byte), custom_code 1, builtin_code 3.
            let deprecated = i32::from(c.u8(0, 0)? as i8);
            let code = c.i32(3, 0)?.max(deprecated);
            Ok((code, c.string(1)?))
        })
        .collect::<Result<Vec<_>, EffectsError>>()?;
    let buffers = model.tables(4)?;
    let subgraphs = model.tables(2)?;
    let graph = subgraphs.first().ok_or_else(|| bad("no subgraph"))?;
    // SubGraph: tensors 0, inputs 1, outputs 2, operators 3.
    let tensors = graph
        .tables(0)?
        .iter()
        .map(|t| {
            // Tensor: shape 0, type 1, buffer 2.
            let shape = t
                .ints(0)?
                .iter()
                .map(|d| usize::try_from(*d).map_err(|_| bad("negative dimension")))
                .collect::<Result<Vec<_>, _>>()?;
            let buffer = t.u32(2, 0)? as usize;
            let data = match buffers.get(buffer) {
                Some(b) if buffer > 0 => b.bytes(0)?.to_vec(),
                _ => Vec::new(),
            };
            Ok(TensorDecl {
                shape,
                dtype: t.u8(1, 0)?,
                data,
            })
        })
        .collect::<Result<Vec<_>, EffectsError>>()?;
    let ops = graph
        .tables(3)?
        .iter()
        .map(|o| {
            // Operator: opcode_index 0, inputs 1, outputs 2, builtin_options 4, custom_options 5.
            let (code, custom) = codes
                .get(o.u32(0, 0)? as usize)
                .cloned()
                .ok_or_else(|| bad("opcode index"))?;
            let options = match o.table(4)? {
                None => Options::None,
                Some(t) => options(code, &t)?,
            };
            Ok(OpDecl {
                code,
                custom,
                inputs: o.ints(1)?,
                outputs: o.ints(2)?,
                options,
                custom_options: o.bytes(5)?.to_vec(),
            })
        })
        .collect::<Result<Vec<_>, EffectsError>>()?;
    Ok(Graph {
        tensors,
        inputs: graph.ints(1)?,
        outputs: graph.ints(2)?,
        ops,
    })
}

fn padding(v: u8) -> Padding {
    if v == 1 {
        Padding::Valid
    } else {
        Padding::Same
    }
}

fn activation(v: u8) -> Result<Activation, EffectsError> {
    match v {
        0 => Ok(Activation::None),
        1 => Ok(Activation::Relu),
        3 => Ok(Activation::Relu6),
        other => Err(EffectsError::Model(format!(
            "unsupported fused activation {other}"
        ))),
    }
}

fn dim(v: i32) -> Result<usize, EffectsError> {
    usize::try_from(v)
        .ok()
        .filter(|d| *d > 0)
        .ok_or_else(|| bad("stride or size"))
}

/// The options table of an operator, by its code (field indices from the schema).
fn options(code: i32, t: &Table<'_>) -> Result<Options, EffectsError> {
    Ok(match code {
        // Conv2DOptions: padding 0, stride_w 1, stride_h 2, fused_activation 3, dilation 4, 5.
        op::CONV_2D => Options::Conv {
            padding: padding(t.u8(0, 0)?),
            stride: (dim(t.i32(2, 1)?)?, dim(t.i32(1, 1)?)?),
            act: activation(t.u8(3, 0)?)?,
            dilation: (dim(t.i32(5, 1)?)?, dim(t.i32(4, 1)?)?),
        },
        // DepthwiseConv2DOptions: padding 0, stride_w 1, stride_h 2, depth_multiplier 3,
        // fused_activation 4, dilation_w 5, dilation_h 6.
        op::DEPTHWISE_CONV_2D => Options::Depthwise {
            padding: padding(t.u8(0, 0)?),
            stride: (dim(t.i32(2, 1)?)?, dim(t.i32(1, 1)?)?),
            multiplier: dim(t.i32(3, 1)?)?,
            act: activation(t.u8(4, 0)?)?,
            dilation: (dim(t.i32(6, 1)?)?, dim(t.i32(5, 1)?)?),
        },
        // Pool2DOptions: padding 0, stride_w 1, stride_h 2, filter_width 3, filter_height 4,
        // fused_activation 5.
        op::AVERAGE_POOL_2D => Options::Pool {
            padding: padding(t.u8(0, 0)?),
            stride: (dim(t.i32(2, 1)?)?, dim(t.i32(1, 1)?)?),
            filter: (dim(t.i32(4, 1)?)?, dim(t.i32(3, 1)?)?),
            act: activation(t.u8(5, 0)?)?,
        },
        // AddOptions, MulOptions: fused_activation 0.
        op::ADD | op::MUL => Options::Act(activation(t.u8(0, 0)?)?),
        // ReducerOptions: keep_dims 0.
        op::MEAN => Options::Reducer {
            keep_dims: t.u8(0, 0)? != 0,
        },
        // ResizeBilinearOptions: align_corners 2, half_pixel_centers 3.
        op::RESIZE_BILINEAR => Options::Resize {
            align_corners: t.u8(2, 0)? != 0,
            half_pixel_centers: t.u8(3, 0)? != 0,
        },
        _ => Options::None,
    })
}
