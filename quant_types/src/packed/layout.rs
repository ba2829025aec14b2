//! The packed layouts, their builder from ggml's blocks, and their plain-Rust reader.
//!
//! A packed row is a sequence of groups. 32-weight types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL)
//! group 16 blocks (512 weights), NF4 groups 8 blocks of 64, K-quants hold one super-block (256)
//! per group. A group is a header then one payload per 64 weights ("chunk"):
//!
//! | types | header | chunk payload |
//! |---|---|---|
//! | Q4_0, IQ4_NL, NF4 | 16 f16 scales (32 B) | 32 B nibbles |
//! | Q4_1 | 16 f16 scales, 16 f16 minimums (64 B) | 32 B nibbles |
//! | Q5_0 | 16 f16 scales | 32 B nibbles + 8 B fifth bits |
//! | Q5_1 | 16 f16 scales, 16 f16 minimums | 32 B nibbles + 8 B fifth bits |
//! | Q8_0 | 16 f16 scales | 64 B levels + 128 |
//! | Q4_K | d, dmin (f16), 8 scales, 8 minimums (u8): 20 B | 32 B nibbles |
//! | Q5_K | as Q4_K | 32 B nibbles + 8 B fifth bits |
//! | Q6_K | d (f16), 2 B padding, 16 scales (i8): 20 B | 32 B nibbles + 16 B two-bit tops |
//!
//! Nibbles: byte i of a chunk holds element i in its low half and element 32 + i in its high
//! half, so broadcasting the 32 bytes to both halves of a 512-bit register, shifting the upper
//! half right by 4 and masking gives the 64 levels in order. Fifth bits: bit i of a little-endian
//! u64 is element i's. Q6_K tops: byte i holds the top two bits of elements i, 16 + i, 32 + i and
//! 48 + i at bit offsets 0, 2, 4 and 6. A last group may be short; rows are padded with zero
//! blocks to whole chunks.

use super::arena::{Arena, ArenaSlice};
use crate::formats::*;
use crate::fp::f16_to_f32;
use crate::GgmlType;
use half::f16;

/// How a type's levels are stored and read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    /// 4-bit levels, used as they are (Q4_0, Q4_1, Q4_K).
    Nib,
    /// 4-bit indices into a 16-entry table of levels + 128 (IQ4_NL, NF4).
    Table(&'static [u8; 16]),
    /// 5-bit levels (Q5_0, Q5_1, Q5_K).
    Nib5,
    /// 6-bit levels (Q6_K).
    Nib6,
    /// 8-bit levels stored with 128 added (Q8_0).
    Byte,
}

/// Table of IQ4_NL's levels + 128.
pub(crate) static IQ4NL_U8: [u8; 16] = shifted(&KVALUES_IQ4NL);
/// Table of NF4's int8 levels + 128.
pub(crate) static NF4_U8: [u8; 16] = shifted(&NF4_LEVELS_I8);

const fn shifted(t: &[i8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = (t[i] as i16 + 128) as u8;
        i += 1;
    }
    out
}

/// Geometry of one type's packed groups.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub kind: Kind,
    /// Weights per group.
    pub group: usize,
    pub header: usize,
    pub chunk: usize,
    /// Header carries f16 minimums after the scales (Q4_1, Q5_1).
    #[allow(dead_code)]
    pub has_min: bool,
}

pub(crate) fn geometry(ty: GgmlType) -> Geometry {
    use GgmlType::*;
    let g = |kind, group, header, chunk, has_min| Geometry {
        kind,
        group,
        header,
        chunk,
        has_min,
    };
    match ty {
        Q4_0 => g(Kind::Nib, 512, 32, 32, false),
        Q4_1 => g(Kind::Nib, 512, 64, 32, true),
        Q5_0 => g(Kind::Nib5, 512, 32, 40, false),
        Q5_1 => g(Kind::Nib5, 512, 64, 40, true),
        Q8_0 => g(Kind::Byte, 512, 32, 64, false),
        IQ4_NL => g(Kind::Table(&IQ4NL_U8), 512, 32, 32, false),
        NF4 => g(Kind::Table(&NF4_U8), 512, 32, 32, false),
        Q4_K => g(Kind::Nib, 256, 20, 32, false),
        Q5_K => g(Kind::Nib5, 256, 20, 40, false),
        Q6_K => g(Kind::Nib6, 256, 20, 48, false),
        other => panic!("{other} has no packed layout"),
    }
}

/// How a packed matrix orders its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    /// Row after row, each in the groups this module describes (every packed type).
    Rows,
    /// Sixteen rows woven together per block (`super::interleaved`): every packed type on
    /// x86 CPUs with AVX-512 VNNI or AVX2, where one `vpdpbusd` then serves 16 rows at once,
    /// or one `vpmaddubsw` 8.
    Interleaved16,
}

impl Layout {
    /// Whether products on this layout come out token-major natively (see
    /// `super::gemm_token_major`).
    pub fn token_major(self) -> bool {
        self == Layout::Interleaved16
    }

    /// The layout this CPU's fastest kernels read for `ty`.
    pub fn best_for(ty: GgmlType) -> Layout {
        if super::interleaved::supports(ty) && super::Kernels::best().interleaves() {
            Layout::Interleaved16
        } else {
            Layout::Rows
        }
    }

    /// Matrix rows per unit of packing (a row, or a woven group of rows).
    pub fn unit_rows(self) -> usize {
        match self {
            Layout::Rows => 1,
            Layout::Interleaved16 => super::interleaved::ROWS,
        }
    }
}

/// A weight matrix in a packed layout, owned: `rows` rows of `cols` weights, stored as units
/// of `layout.unit_rows()` rows (the last one padded with zero rows) of `unit_bytes` each.
#[derive(Clone)]
pub struct PackedMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    layout: Layout,
    unit_bytes: usize,
    data: Storage,
}

/// Where a matrix's bytes live: its own heap allocation, or a slice of a model's huge-page
/// arena.
enum Storage {
    Heap(Vec<u8>),
    Arena(ArenaSlice),
}

impl Clone for Storage {
    /// A copy on the heap (an arena slice is owned by one matrix).
    fn clone(&self) -> Storage {
        Storage::Heap(match self {
            Storage::Heap(v) => v.clone(),
            Storage::Arena(s) => s.bytes().to_vec(),
        })
    }
}

impl PackedMatrix {
    /// Packs a matrix given as ggml blocks (`src`: `rows` rows of `cols` weights of type `ty`)
    /// in the layout this CPU reads fastest. Returns None for a type without a packed layout.
    pub fn pack(ty: GgmlType, rows: usize, cols: usize, src: &[u8]) -> Option<PackedMatrix> {
        Self::pack_with(ty, rows, cols, src, Layout::best_for(ty))
    }

    /// [`PackedMatrix::pack`] in a given layout (None where `ty` has no such layout). Units are
    /// packed by [`pack_unit`], so callers may split the work; this convenience does all in
    /// order.
    pub fn pack_with(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        src: &[u8],
        layout: Layout,
    ) -> Option<PackedMatrix> {
        let mut m = PackedMatrix::alloc_with(ty, rows, cols, layout)?;
        let src_row = ty.row_bytes(cols)?;
        assert_eq!(
            src.len(),
            rows * src_row,
            "{ty} matrix of {rows} x {cols}: byte count"
        );
        let ub = m.unit_bytes;
        let per_unit = src_row * layout.unit_rows();
        for (dst, src) in m.bytes_mut().chunks_exact_mut(ub).zip(src.chunks(per_unit)) {
            pack_unit(ty, cols, layout, src, dst);
        }
        Some(m)
    }

    /// An all-zero matrix in the layout this CPU reads fastest, to be filled unit by unit
    /// with [`pack_unit`] through [`PackedMatrix::bytes_mut`].
    pub fn alloc(ty: GgmlType, rows: usize, cols: usize) -> Option<PackedMatrix> {
        Self::alloc_with(ty, rows, cols, Layout::best_for(ty))
    }

    /// [`PackedMatrix::alloc`] in a given layout.
    pub fn alloc_with(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        layout: Layout,
    ) -> Option<PackedMatrix> {
        Self::alloc_in(None, ty, rows, cols, layout)
    }

    /// [`PackedMatrix::alloc_with`], its bytes taken from `arena` (huge pages) when given.
    pub fn alloc_in(
        arena: Option<&Arena>,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        layout: Layout,
    ) -> Option<PackedMatrix> {
        if !super::supports(ty) || cols == 0 || !cols.is_multiple_of(ty.block_elems()) {
            return None;
        }
        let unit_bytes = match layout {
            // F16 is woven only: its products are float, and a row layout would be the file's.
            Layout::Rows if ty == GgmlType::F16 => return None,
            Layout::Rows => packed_row_bytes(ty, cols),
            Layout::Interleaved16 if super::interleaved::supports(ty) => {
                super::interleaved::unit_bytes(ty, cols)
            }
            Layout::Interleaved16 => return None,
        };
        let units = rows.div_ceil(layout.unit_rows());
        let len = units * unit_bytes;
        let data = match arena.and_then(|a| a.take(len)) {
            Some(slice) => Storage::Arena(slice),
            None => Storage::Heap(vec![0u8; len]),
        };
        Some(PackedMatrix {
            ty,
            rows,
            cols,
            layout,
            unit_bytes,
            data,
        })
    }

    /// All packed bytes, units of `unit_bytes()`, to fill with [`pack_unit`] (in parallel, by
    /// chunks of `unit_bytes()`, from `unit_rows()` source rows each).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.data {
            Storage::Heap(v) => v,
            Storage::Arena(s) => s.bytes_mut(),
        }
    }

    fn data(&self) -> &[u8] {
        match &self.data {
            Storage::Heap(v) => v,
            Storage::Arena(s) => s.bytes(),
        }
    }

    /// Dequantizes row `r` into `out` (`cols()` floats): the same floats ggml's dequantizer
    /// gives for the original blocks (w = A * u + B is exact in f32 for every packed type).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.cols, "row length");
        // Interleaved 32-weight types and F16 read their floats back exactly from their own
        // bytes; K-quants, in either layout, through `unpack_row` below.
        if self.layout == Layout::Interleaved16 && self.ty.block_elems() != 256 {
            return super::interleaved::dequantize_row(self, r, out);
        }
        if self.ty == GgmlType::NF4 {
            // The kernels multiply int8 images of the NF4 levels; dequantization uses the exact
            // levels, read back through the indices.
            let row = self.row(r);
            let g = geometry(GgmlType::NF4);
            for (c, y) in out.chunks_exact_mut(64).enumerate() {
                let group = c / 8;
                let hdr = group * (g.header + 8 * g.chunk);
                let d = get16(&row[hdr..], c % 8);
                let p = &row[hdr + g.header + (c % 8) * g.chunk..];
                for i in 0..32 {
                    y[i] = d * NF4_LEVELS[(p[i] & 15) as usize];
                    y[32 + i] = d * NF4_LEVELS[(p[i] >> 4) as usize];
                }
            }
            return;
        }
        let kp = self.cols.div_ceil(64) * 64;
        let mut u = vec![0u8; kp];
        let mut scale = vec![0f32; kp / 16];
        let mut bias = vec![0f32; kp / 16];
        unpack_row(self, r, &mut u, &mut scale, &mut bias);
        let q6 = self.ty == GgmlType::Q6_K;
        for (i, o) in out.iter_mut().enumerate() {
            let b = if q6 { bias[i / 16] } else { bias[i / 32] };
            *o = scale[i / 16] * u[i] as f32 + b;
        }
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// Rows per unit of packing.
    pub fn unit_rows(&self) -> usize {
        self.layout.unit_rows()
    }
    /// Bytes per unit of packing.
    pub fn unit_bytes(&self) -> usize {
        self.unit_bytes
    }
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data().len()
    }
    /// Packed unit `i` (row `i` in [`Layout::Rows`]).
    pub(crate) fn unit(&self, i: usize) -> &[u8] {
        &self.data()[i * self.unit_bytes..(i + 1) * self.unit_bytes]
    }
    pub(crate) fn row(&self, r: usize) -> &[u8] {
        debug_assert_eq!(self.layout, Layout::Rows);
        self.unit(r)
    }
}

/// Packs one unit of `layout` (`src`: the unit's rows of ggml blocks, `cols` weights each;
/// fewer than `layout.unit_rows()` for the last unit of a matrix) into `dst`
/// (`unit_bytes()` bytes).
pub fn pack_unit(ty: GgmlType, cols: usize, layout: Layout, src: &[u8], dst: &mut [u8]) {
    match layout {
        Layout::Rows => pack_row(ty, cols, src, dst),
        Layout::Interleaved16 => super::interleaved::pack_unit(ty, cols, src, dst),
    }
}

/// Bytes of one packed row of `cols` weights.
pub fn packed_row_bytes(ty: GgmlType, cols: usize) -> usize {
    let g = geometry(ty);
    let chunks = cols.div_ceil(64);
    let groups = cols.div_ceil(g.group);
    groups * g.header + chunks * g.chunk
}

/// Unsigned level of every weight of a row (see the module's table of kinds: Table kinds give
/// the index, Byte gives level + 128), in element order, padded with zeros to whole chunks.
pub(crate) fn row_levels(ty: GgmlType, src: &[u8], cols: usize) -> Vec<u8> {
    let mut u = Vec::new();
    row_levels_into(ty, src, cols, &mut u);
    u
}

/// [`row_levels`] into a buffer kept across rows (packing calls it for every row at load).
pub(crate) fn row_levels_into(ty: GgmlType, src: &[u8], cols: usize, u: &mut Vec<u8>) {
    u.clear();
    u.resize(cols.div_ceil(64) * 64, 0);
    macro_rules! each {
        ($B:ty, |$b:ident| $levels:expr) => {{
            let blocks: &[$B] = bytemuck::cast_slice(src);
            let e = <$B as crate::BlockFormat>::BLOCK_ELEMS;
            for (i, $b) in blocks.iter().enumerate() {
                u[i * e..(i + 1) * e].copy_from_slice(&$levels);
            }
        }};
    }
    match ty {
        GgmlType::Q4_0 => each!(BlockQ4_0, |b| unpack_nibbles_split16(&b.qs)),
        GgmlType::Q4_1 => each!(BlockQ4_1, |b| unpack_nibbles_split16(&b.qs)),
        GgmlType::IQ4_NL => each!(BlockIQ4NL, |b| unpack_nibbles_split16(&b.qs)),
        GgmlType::Q5_0 => each!(BlockQ5_0, |b| b.levels()),
        GgmlType::Q5_1 => each!(BlockQ5_1, |b| b.levels()),
        GgmlType::Q8_0 => each!(BlockQ8_0, |b| b.qs.map(|q| (q as u8) ^ 0x80)),
        GgmlType::NF4 => each!(BlockNF4, |b| b.indices()),
        GgmlType::Q4_K => each!(BlockQ4K, |b| b.levels()),
        GgmlType::Q5_K => each!(BlockQ5K, |b| b.levels()),
        GgmlType::Q6_K => each!(BlockQ6K, |b| b.levels()),
        other => panic!("{other} has no packed layout"),
    }
}

/// Packs one row of ggml blocks (`src`, `cols` weights of type `ty`) into `dst`
/// (`packed_row_bytes(ty, cols)` bytes).
pub fn pack_row(ty: GgmlType, cols: usize, src: &[u8], dst: &mut [u8]) {
    let g = geometry(ty);
    assert_eq!(dst.len(), packed_row_bytes(ty, cols), "packed row length");
    assert_eq!(Some(src.len()), ty.row_bytes(cols), "{ty} row length");
    let u = row_levels(ty, src, cols);
    let chunks = u.len() / 64;
    let per_group = g.group / 64;
    let mut at = 0;
    for first in (0..chunks).step_by(per_group) {
        let n = per_group.min(chunks - first);
        let hdr = &mut dst[at..at + g.header];
        write_header(ty, src, first * 64 / g.group, hdr);
        at += g.header;
        for c in first..first + n {
            let lv = &u[64 * c..64 * c + 64];
            let out = &mut dst[at..at + g.chunk];
            match g.kind {
                Kind::Byte => out.copy_from_slice(lv),
                Kind::Nib | Kind::Table(_) => nibbles(lv, out),
                Kind::Nib5 => {
                    nibbles(lv, &mut out[..32]);
                    let bits = (0..64).fold(0u64, |m, i| m | (((lv[i] >> 4) & 1) as u64) << i);
                    out[32..40].copy_from_slice(&bits.to_le_bytes());
                }
                Kind::Nib6 => {
                    nibbles(lv, &mut out[..32]);
                    for i in 0..16 {
                        out[32 + i] =
                            (0..4).fold(0u8, |b, k| b | ((lv[16 * k + i] >> 4) & 3) << (2 * k));
                    }
                }
            }
            at += g.chunk;
        }
    }
    debug_assert_eq!(at, dst.len());
}

fn nibbles(lv: &[u8], out: &mut [u8]) {
    for i in 0..32 {
        out[i] = (lv[i] & 15) | (lv[32 + i] & 15) << 4;
    }
}

/// `d`, `dmin` and the packed scales of super-block `b` of a Q4_K or Q5_K row.
pub(crate) fn k_super_block_header(ty: GgmlType, src: &[u8], b: usize) -> (f16, f16, [u8; 12]) {
    if ty == GgmlType::Q4_K {
        let k = &bytemuck::cast_slice::<u8, BlockQ4K>(src)[b];
        (k.d, k.dmin, k.scales)
    } else {
        let k = &bytemuck::cast_slice::<u8, BlockQ5K>(src)[b];
        (k.d, k.dmin, k.scales)
    }
}

/// Writes the header of group `g` of a row from its ggml blocks.
fn write_header(ty: GgmlType, src: &[u8], g: usize, hdr: &mut [u8]) {
    let put16 =
        |hdr: &mut [u8], i: usize, v: f16| hdr[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
    macro_rules! scales32 {
        ($B:ty, $min:expr) => {{
            let blocks: &[$B] = bytemuck::cast_slice(src);
            let per = 512 / <$B as crate::BlockFormat>::BLOCK_ELEMS;
            for (i, b) in blocks.iter().skip(g * per).take(per).enumerate() {
                put16(hdr, i, b.d);
                if $min {
                    put16(&mut hdr[32..], i, min_of(b));
                }
            }
        }};
    }
    match ty {
        GgmlType::Q4_0 => scales32!(BlockQ4_0, false),
        GgmlType::Q4_1 => scales32!(BlockQ4_1, true),
        GgmlType::Q5_0 => scales32!(BlockQ5_0, false),
        GgmlType::Q5_1 => scales32!(BlockQ5_1, true),
        GgmlType::Q8_0 => scales32!(BlockQ8_0, false),
        GgmlType::IQ4_NL => scales32!(BlockIQ4NL, false),
        GgmlType::NF4 => scales32!(BlockNF4, false),
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (d, dmin, sc) = k_super_block_header(ty, src, g);
            put16(hdr, 0, d);
            put16(hdr, 1, dmin);
            for j in 0..8 {
                let (s, m) = k_scale_min(j, &sc);
                hdr[4 + j] = s;
                hdr[12 + j] = m;
            }
        }
        GgmlType::Q6_K => {
            let b = &bytemuck::cast_slice::<u8, BlockQ6K>(src)[g];
            put16(hdr, 0, b.d);
            for (o, &s) in hdr[4..20].iter_mut().zip(&b.scales) {
                *o = s as u8;
            }
        }
        other => panic!("{other} has no packed layout"),
    }
}

/// The minimum field of the `_1` types (never called for others).
trait MinOf {
    fn min_field(&self) -> f16;
}
impl MinOf for BlockQ4_1 {
    fn min_field(&self) -> f16 {
        self.m
    }
}
impl MinOf for BlockQ5_1 {
    fn min_field(&self) -> f16 {
        self.m
    }
}
macro_rules! no_min {
    ($($B:ty),*) => {$(impl MinOf for $B { fn min_field(&self) -> f16 { f16::ZERO } })*};
}
no_min!(BlockQ4_0, BlockQ5_0, BlockQ8_0, BlockIQ4NL, BlockNF4);
fn min_of<B: MinOf>(b: &B) -> f16 {
    b.min_field()
}

pub(crate) fn get16(b: &[u8], i: usize) -> f32 {
    f16_to_f32(f16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
}

/// Reads row `r` of `w` back from its packed bytes: `u` the level of every weight as the
/// kernels multiply it (table kinds looked up), `scale` the weight scale of every 16 weights,
/// `bias` the offset/minimum term: per 32 weights in `bias[..kp/32]`, or per 16 for Q6_K.
pub(crate) fn unpack_row(
    w: &PackedMatrix,
    r: usize,
    u: &mut [u8],
    scale: &mut [f32],
    bias: &mut [f32],
) {
    if w.layout() == Layout::Interleaved16 {
        return super::interleaved::unpack_row(w, r, u, scale, bias);
    }
    let ty = w.ty();
    let g = geometry(ty);
    let row = w.row(r);
    u.fill(0);
    scale.fill(0.0);
    bias.fill(0.0);
    let chunks = w.cols().div_ceil(64);
    let per_group = g.group / 64;
    let mut at = 0;
    for first in (0..chunks).step_by(per_group) {
        let n = per_group.min(chunks - first);
        let hdr = &row[at..at + g.header];
        at += g.header;
        for c in first..first + n {
            let p = &row[at..at + g.chunk];
            at += g.chunk;
            let lv = &mut u[64 * c..64 * c + 64];
            match g.kind {
                Kind::Byte => lv.copy_from_slice(p),
                Kind::Nib | Kind::Table(_) | Kind::Nib5 | Kind::Nib6 => {
                    for i in 0..32 {
                        lv[i] = p[i] & 15;
                        lv[32 + i] = p[i] >> 4;
                    }
                    if g.kind == Kind::Nib5 {
                        let bits = u64::from_le_bytes(p[32..40].try_into().unwrap());
                        for (i, v) in lv.iter_mut().enumerate() {
                            *v |= (((bits >> i) & 1) as u8) << 4;
                        }
                    }
                    if g.kind == Kind::Nib6 {
                        for i in 0..16 {
                            for k in 0..4 {
                                lv[16 * k + i] |= ((p[32 + i] >> (2 * k)) & 3) << 4;
                            }
                        }
                    }
                    if let Kind::Table(t) = g.kind {
                        for v in lv.iter_mut() {
                            *v = t[*v as usize];
                        }
                    }
                }
            }
            // Scales and biases of this chunk's 64 weights.
            let local = c - first;
            for half in 0..2 {
                let (a, b) = chunk_scale_bias(ty, hdr, local, half);
                let j = 2 * c + half; // 32-weight sub-block of the row
                scale[2 * j] = a;
                scale[2 * j + 1] = a;
                if ty == GgmlType::Q6_K {
                    let (a0, b0) = q6_scale_bias(hdr, 4 * local + 2 * half);
                    let (a1, b1) = q6_scale_bias(hdr, 4 * local + 2 * half + 1);
                    scale[2 * j] = a0;
                    scale[2 * j + 1] = a1;
                    bias[2 * j] = b0;
                    bias[2 * j + 1] = b1;
                } else {
                    bias[j] = b;
                }
            }
        }
    }
}

/// Weight scale A and bias B (w = A * u + B) of half `half` (32 weights) of chunk `c` of a
/// group whose header is `hdr`. Q6_K is per 16: see [`q6_scale_bias`].
fn chunk_scale_bias(ty: GgmlType, hdr: &[u8], c: usize, half: usize) -> (f32, f32) {
    use GgmlType::*;
    let block = 2 * c + half;
    match ty {
        Q4_0 => (get16(hdr, block), -8.0 * get16(hdr, block)),
        Q5_0 => (get16(hdr, block), -16.0 * get16(hdr, block)),
        Q8_0 | IQ4_NL => (get16(hdr, block), -128.0 * get16(hdr, block)),
        Q4_1 | Q5_1 => (get16(hdr, block), get16(&hdr[32..], block)),
        NF4 => {
            let a = get16(hdr, c) * (1.0 / 127.0);
            (a, -128.0 * a)
        }
        Q4_K | Q5_K => {
            let (d, dmin) = (get16(hdr, 0), get16(hdr, 1));
            (d * hdr[4 + block] as f32, -dmin * hdr[12 + block] as f32)
        }
        Q6_K => (0.0, 0.0),
        other => panic!("{other} has no packed layout"),
    }
}

/// Q6_K: scale and bias of 16-weight sub-block `s` of a super-block.
fn q6_scale_bias(hdr: &[u8], s: usize) -> (f32, f32) {
    let a = get16(hdr, 0) * (hdr[4 + s] as i8) as f32;
    (a, -32.0 * a)
}

/// The bias terms of a row against one activation row: sum over sub-blocks of B * c.
pub(crate) fn bias_dot(ty: GgmlType, bias: &[f32], c16: &[f32], c32: &[f32]) -> f32 {
    if ty == GgmlType::Q6_K {
        bias.iter().zip(c16).map(|(b, c)| b * c).sum()
    } else {
        bias.iter().zip(c32).map(|(b, c)| b * c).sum()
    }
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PackedMatrix({} [{} x {}])",
            self.ty, self.rows, self.cols
        )
    }
}
