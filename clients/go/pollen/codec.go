package pollen

import (
	"encoding/binary"
	"math"
	"math/bits"
	"sort"
)

// floatAt reads element i of a float tensor's canonical bytes as its exact binary64 value.
func floatAt(data []byte, d DType, i int) float64 {
	switch d {
	case Float16:
		return fmtF16.widen(binary.LittleEndian.Uint16(data[2*i:]))
	case BFloat16:
		return f32BitsToF64(uint32(binary.LittleEndian.Uint16(data[2*i:])) << 16)
	case Float32:
		return f32BitsToF64(binary.LittleEndian.Uint32(data[4*i:]))
	default:
		return math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:]))
	}
}

// putFloat writes v into element i of a float tensor with one rounding to nearest even.
func putFloat(data []byte, d DType, i int, v float64) {
	switch d {
	case Float16:
		binary.LittleEndian.PutUint16(data[2*i:], fmtF16.roundHalf(v))
	case BFloat16:
		binary.LittleEndian.PutUint16(data[2*i:], fmtBF16.roundHalf(v))
	case Float32:
		binary.LittleEndian.PutUint32(data[4*i:], f64ToF32Bits(v))
	default:
		binary.LittleEndian.PutUint64(data[8*i:], math.Float64bits(v))
	}
}

// EncodeOptions are the parameters of the codecs that have some.
type EncodeOptions struct {
	// K is the number of elements topk keeps.
	K int
	// ZstdLevel is the zstd encoder level; 0 means the default (3).
	ZstdLevel int
}

// EncodePayload encodes a tensor's canonical bytes with a codec (spec chapter 9). The tensor
// must be well formed (len(t.Data) == numel × itemsize).
func EncodePayload(t *Tensor, codec string, opt EncodeOptions) ([]byte, error) {
	if !knownCodec(codec) {
		return nil, NewError(CodeCodecUnsupported, "codec", "codec %q is not implemented", codec)
	}
	if !codecApplies(codec, t.DType) {
		return nil, NewError(CodeCodecDataInvalid, "codec", "codec %s does not apply to %s", codec, t.DType)
	}
	numel, err := t.checkedNumel()
	if err != nil {
		return nil, err
	}
	n := int(numel)
	switch codec {
	case CodecRaw:
		return t.Data, nil
	case CodecZstd:
		return zstdEncode(t.Data, opt.ZstdLevel)
	case CodecFloat16, CodecBFloat16:
		f := fmtF16
		if codec == CodecBFloat16 {
			f = fmtBF16
		}
		out := make([]byte, 2*n)
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint16(out[2*i:], f.roundHalf(floatAt(t.Data, t.DType, i)))
		}
		return out, nil
	case CodecInt8:
		return int8Encode(t, n)
	default:
		return topkEncode(t, n, opt.K)
	}
}

func int8Encode(t *Tensor, n int) ([]byte, error) {
	lo, hi := 0.0, 0.0
	for i := 0; i < n; i++ {
		x := floatAt(t.Data, t.DType, i)
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, NewError(CodeTensorValueInvalid, "", "int8 cannot encode NaN or infinity (element %d)", i)
		}
		lo, hi = min(lo, x), max(hi, x)
	}
	scale := 1.0
	if hi != lo {
		// float64() keeps the compiler from fusing operations (the spec forbids FMA).
		scale = float64(hi-lo) / 255
	}
	if scale == 0 || math.IsInf(scale, 0) {
		return nil, NewError(CodeTensorValueInvalid, "", "int8 scale %v is not representable", scale)
	}
	zp := clampI8(-128 - math.RoundToEven(float64(lo/scale)))
	out := make([]byte, 9+n)
	binary.LittleEndian.PutUint64(out, math.Float64bits(scale))
	out[8] = byte(int8(zp))
	for i := 0; i < n; i++ {
		x := floatAt(t.Data, t.DType, i)
		out[9+i] = byte(int8(clampI8(math.RoundToEven(float64(x/scale)) + zp)))
	}
	return out, nil
}

func clampI8(v float64) float64 { return max(-128, min(127, v)) }

func topkEncode(t *Tensor, n, k int) ([]byte, error) {
	if k < 0 || k > n {
		return nil, NewError(CodeInvalidArgument, "", "topk k=%d outside [0, %d]", k, n)
	}
	mags := make([]float64, n)
	for i := range mags {
		x := floatAt(t.Data, t.DType, i)
		if math.IsNaN(x) {
			return nil, NewError(CodeTensorValueInvalid, "", "topk cannot encode NaN (element %d)", i)
		}
		mags[i] = math.Abs(x)
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	// A stable sort by descending magnitude breaks ties by the smaller index (PLN-COD-032).
	sort.SliceStable(idx, func(a, b int) bool { return mags[idx[a]] > mags[idx[b]] })
	kept := idx[:k]
	sort.Ints(kept)
	w := topkIndexWidth(uint64(n))
	size := Itemsize(t.DType)
	out := make([]byte, 8+k*w+k*size)
	binary.LittleEndian.PutUint64(out, uint64(k))
	for j, i := range kept {
		if w == 4 {
			binary.LittleEndian.PutUint32(out[8+4*j:], uint32(i))
		} else {
			binary.LittleEndian.PutUint64(out[8+8*j:], uint64(i))
		}
		copy(out[8+k*w+j*size:], t.Data[i*size:(i+1)*size])
	}
	return out, nil
}

func topkIndexWidth(numel uint64) int {
	if numel <= 1<<32 {
		return 4
	}
	return 8
}

// decodePayload runs step 8 of the decode check order (and builds the canonical bytes) for a
// tensor whose dtype, codec and shape have passed steps 1 to 6. expected = numel × itemsize,
// already known not to overflow.
func decodePayload(codec string, d DType, numel, expected uint64, p []byte) ([]byte, error) {
	switch codec {
	case CodecRaw:
		if uint64(len(p)) != expected {
			return nil, sizeMismatch(len(p), expected)
		}
		return p, nil
	case CodecZstd:
		return zstdDecode(p, expected)
	case CodecFloat16, CodecBFloat16:
		if uint64(len(p)) != 2*numel {
			return nil, sizeMismatch(len(p), 2*numel)
		}
		f := fmtF16
		if codec == CodecBFloat16 {
			f = fmtBF16
		}
		out := make([]byte, expected)
		for i := 0; i < int(numel); i++ {
			h := binary.LittleEndian.Uint16(p[2*i:])
			if codec == CodecBFloat16 {
				// bfloat16 is exactly the upper half of a binary32 (PLN-COD-019).
				putFloat(out, d, i, f32BitsToF64(uint32(h)<<16))
			} else {
				putFloat(out, d, i, f.widen(h))
			}
		}
		return out, nil
	case CodecInt8:
		if uint64(len(p)) != 9+numel {
			return nil, sizeMismatch(len(p), 9+numel)
		}
		scale := math.Float64frombits(binary.LittleEndian.Uint64(p))
		if math.IsNaN(scale) || math.IsInf(scale, 0) || scale < 0 {
			return nil, NewError(CodeCodecDataInvalid, "", "int8 scale %v is not a finite non-negative number", scale)
		}
		if scale == 0 {
			// PLN-COD-022: conforming encoders never write it, so it signals a broken peer.
			return nil, NewError(CodeCodecDataInvalid, "", "int8 scale is zero")
		}
		zp := float64(int8(p[8]))
		out := make([]byte, expected)
		for i := 0; i < int(numel); i++ {
			putFloat(out, d, i, float64(float64(int8(p[9+i]))-zp)*scale)
		}
		return out, nil
	default:
		return topkDecode(d, numel, expected, p)
	}
}

func topkDecode(d DType, numel, expected uint64, p []byte) ([]byte, error) {
	if len(p) < 8 {
		return nil, NewError(CodeTensorSizeMismatch, "", "topk payload of %d bytes has no k", len(p))
	}
	k := binary.LittleEndian.Uint64(p)
	if k > numel {
		return nil, NewError(CodeCodecDataInvalid, "", "topk k=%d exceeds numel %d", k, numel)
	}
	w := uint64(topkIndexWidth(numel))
	size := uint64(Itemsize(d))
	hi, body := bits.Mul64(k, w+size)
	if total, carry := bits.Add64(body, 8, 0); hi != 0 || carry != 0 || total != uint64(len(p)) {
		return nil, NewError(CodeTensorSizeMismatch, "", "topk payload of %d bytes does not hold k=%d", len(p), k)
	}
	idxs := p[8 : 8+k*w]
	var prev uint64
	for j := uint64(0); j < k; j++ {
		var i uint64
		if w == 4 {
			i = uint64(binary.LittleEndian.Uint32(idxs[4*j:]))
		} else {
			i = binary.LittleEndian.Uint64(idxs[8*j:])
		}
		if (j > 0 && i <= prev) || i >= numel {
			return nil, NewError(CodeCodecDataInvalid, "", "topk index %d at position %d is out of order or range", i, j)
		}
		prev = i
	}
	// All-zero bytes are +0.0 in every float dtype.
	out := make([]byte, expected)
	vals := p[8+k*w:]
	for j := uint64(0); j < k; j++ {
		var i uint64
		if w == 4 {
			i = uint64(binary.LittleEndian.Uint32(idxs[4*j:]))
		} else {
			i = binary.LittleEndian.Uint64(idxs[8*j:])
		}
		copy(out[i*size:(i+1)*size], vals[j*size:(j+1)*size])
	}
	return out, nil
}

func sizeMismatch(got int, want uint64) error {
	return NewError(CodeTensorSizeMismatch, "", "payload is %d bytes, expected %d", got, want)
}
