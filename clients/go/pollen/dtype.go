package pollen

import (
	pb "github.com/pollen-fl/pollen/clients/go/gen/pollen/v1"
)

// DType is a tensor element type (spec chapter 8); the numbers are the wire numbers.
type DType = pb.Dtype

// The dtypes of protocol 1.0.
const (
	Bool     = pb.Dtype_DTYPE_BOOL
	Int8     = pb.Dtype_DTYPE_INT8
	Int16    = pb.Dtype_DTYPE_INT16
	Int32    = pb.Dtype_DTYPE_INT32
	Int64    = pb.Dtype_DTYPE_INT64
	Uint8    = pb.Dtype_DTYPE_UINT8
	Uint16   = pb.Dtype_DTYPE_UINT16
	Uint32   = pb.Dtype_DTYPE_UINT32
	Uint64   = pb.Dtype_DTYPE_UINT64
	Float16  = pb.Dtype_DTYPE_FLOAT16
	BFloat16 = pb.Dtype_DTYPE_BFLOAT16
	Float32  = pb.Dtype_DTYPE_FLOAT32
	Float64  = pb.Dtype_DTYPE_FLOAT64
)

// AllDTypes lists every dtype this SDK can decode and encode.
var AllDTypes = []DType{Bool, Int8, Int16, Int32, Int64, Uint8, Uint16, Uint32, Uint64,
	Float16, BFloat16, Float32, Float64}

// Itemsize is the size of one element in bytes, or 0 for a dtype this SDK does not know.
func Itemsize(d DType) int {
	switch d {
	case Bool, Int8, Uint8:
		return 1
	case Int16, Uint16, Float16, BFloat16:
		return 2
	case Int32, Uint32, Float32:
		return 4
	case Int64, Uint64, Float64:
		return 8
	}
	return 0
}

func isFloat(d DType) bool {
	return d == Float16 || d == BFloat16 || d == Float32 || d == Float64
}

// The codec ids of protocol 1.0.
const (
	CodecRaw      = "raw"
	CodecZstd     = "zstd"
	CodecFloat16  = "float16"
	CodecBFloat16 = "bfloat16"
	CodecInt8     = "int8"
	CodecTopK     = "topk"
)

// AllCodecs lists every codec this SDK implements, in the order it prefers them: the lossless
// ones first, since a lossy codec is only ever used when a run asks for it (PLN-HS-019).
var AllCodecs = []string{CodecRaw, CodecZstd, CodecFloat16, CodecBFloat16, CodecInt8, CodecTopK}

// codecApplies is the registry's "applies to dtypes" column.
func codecApplies(codec string, d DType) bool {
	switch codec {
	case CodecRaw, CodecZstd:
		return true
	case CodecFloat16, CodecBFloat16:
		return d == Float32 || d == Float64
	case CodecInt8, CodecTopK:
		return isFloat(d)
	}
	return false
}

func knownCodec(codec string) bool {
	for _, c := range AllCodecs {
		if c == codec {
			return true
		}
	}
	return false
}
