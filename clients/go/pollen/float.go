package pollen

import (
	"math"
	"math/bits"
)

// Half-precision formats are described by their exponent and mantissa widths, so one rounding
// routine serves binary16 (5, 10) and bfloat16 (8, 7).
type halfFormat struct {
	expBits, manBits uint
	qnan             uint16 // the canonical NaN the codecs write (PLN-COD-014, PLN-COD-018)
}

var (
	fmtF16  = halfFormat{5, 10, 0x7E00}
	fmtBF16 = halfFormat{8, 7, 0x7FC0}
)

// roundHalf rounds a binary64 value to the format with one rounding to nearest, ties to even.
// A binary32 source is widened to binary64 first, which is exact, so every source gets a single
// rounding (PLN-COD-013, PLN-COD-017).
func (f halfFormat) roundHalf(x float64) uint16 {
	b := math.Float64bits(x)
	sign := uint16(b>>63) << 15
	if math.IsNaN(x) {
		return sign | f.qnan
	}
	expMask := uint16(1)<<f.expBits - 1
	if math.IsInf(x, 0) {
		return sign | expMask<<f.manBits
	}
	e64 := int((b >> 52) & 0x7FF)
	m := b & (1<<52 - 1)
	if e64 == 0 && m == 0 {
		return sign
	}
	// |x| = m × 2^e with m an integer.
	var e int
	if e64 == 0 {
		e = -1074
	} else {
		m |= 1 << 52
		e = e64 - 1075
	}
	bias := 1<<(f.expBits-1) - 1
	emin := 1 - bias
	top := bits.Len64(m) - 1 + e // floor(log2 |x|)
	// q is the exponent of the target's unit in the last place at this magnitude; below the
	// normal range it stays at the subnormal quantum, which keeps subnormals (no flushing).
	q := max(top, emin) - int(f.manBits)
	var n uint64
	if s := q - e; s <= 0 {
		n = m << uint(-s)
	} else if s < 64 {
		n = m >> uint(s)
		rem := m & (1<<uint(s) - 1)
		half := uint64(1) << uint(s-1)
		if rem > half || (rem == half && n&1 == 1) {
			n++
		}
	} // else |x| is below half the smallest subnormal: n stays 0
	if n < 1<<f.manBits {
		return sign | uint16(n) // subnormal or zero
	}
	if n == 1<<(f.manBits+1) { // rounding carried into the next binade
		n >>= 1
		q++
	}
	biased := q + int(f.manBits) + bias
	if biased >= int(expMask) {
		return sign | expMask<<f.manBits
	}
	return sign | uint16(biased)<<f.manBits | uint16(n-(1<<f.manBits))
}

// widen gives the exact binary64 value of a half-precision pattern. NaNs come back as a quiet
// NaN of the same sign (the codecs leave their payload unspecified).
func (f halfFormat) widen(h uint16) float64 {
	neg := h>>15 == 1
	expMask := uint16(1)<<f.expBits - 1
	ex := (h >> f.manBits) & expMask
	man := uint64(h & (1<<f.manBits - 1))
	bias := 1<<(f.expBits-1) - 1
	var v float64
	switch {
	case ex == expMask && man != 0:
		v = math.NaN()
	case ex == expMask:
		v = math.Inf(1)
	case ex == 0:
		v = math.Ldexp(float64(man), 1-bias-int(f.manBits))
	default:
		v = math.Ldexp(float64(man|1<<f.manBits), int(ex)-bias-int(f.manBits))
	}
	if neg {
		v = math.Copysign(v, -1)
	}
	return v
}

// f64ToF32Bits converts with Go's conversion (round to nearest even) but fixes NaNs to a quiet
// NaN of the same sign, independent of the host's conversion instruction.
func f64ToF32Bits(v float64) uint32 {
	if math.IsNaN(v) {
		return uint32(math.Float64bits(v)>>63)<<31 | 0x7FC00000
	}
	return math.Float32bits(float32(v))
}

func f32BitsToF64(b uint32) float64 {
	if b&0x7F800000 == 0x7F800000 && b&0x007FFFFF != 0 {
		return math.Copysign(math.NaN(), float64(int32(b)>>31|1))
	}
	return float64(math.Float32frombits(b))
}
