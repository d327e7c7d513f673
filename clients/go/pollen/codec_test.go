package pollen

import (
	"bytes"
	"math"
	"testing"

	pb "github.com/pollen-fl/pollen/clients/go/gen/pollen/v1"
)

// zstd encoding is the encoder's choice, so it has no golden vectors: check that what we write
// is one frame with the content size that our own (vector-tested) decoder accepts.
func TestZstdEncodeRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 1000, 300000} {
		v := make([]float64, n)
		for i := range v {
			v[i] = float64(i % 17)
		}
		src := NewFloat64([]int64{int64(n)}, v)
		payload, err := EncodePayload(src, CodecZstd, EncodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		h, err := parseZstdHeader(payload)
		if err != nil || !h.hasContentSize || h.contentSize != uint64(8*n) || h.dictID != 0 {
			t.Fatalf("n=%d: header %+v, %v", n, h, err)
		}
		if h.window > zstdMaxWindow && h.window > uint64(8*n) {
			t.Errorf("n=%d: window %d larger than needed", n, h.window)
		}
		dec := Decoder{Limits: DefaultLimits}
		got, err := dec.DecodeTensor(&pb.Tensor{Dtype: Float64, Shape: src.Shape, Codec: CodecZstd,
			Payload: &pb.Tensor_InlineData{InlineData: payload}})
		if err != nil || !bytes.Equal(got.Data, src.Data) {
			t.Fatalf("n=%d: round trip failed: %v", n, err)
		}
	}
}

func TestTypedAccessorsKeepValues(t *testing.T) {
	src := NewFloat32([]int64{3}, []float32{1.5, float32(math.Inf(-1)), -0})
	v, err := src.Float64s()
	if err != nil || v[0] != 1.5 || !math.IsInf(v[1], -1) {
		t.Fatalf("Float64s %v %v", v, err)
	}
	half := &Tensor{DType: BFloat16, Shape: []int64{2}, Data: make([]byte, 4)}
	if err := half.SetFloat64s([]float64{1 + 1.0/256 + math.Pow(2, -40), -2.5}); err != nil {
		t.Fatal(err)
	}
	// One rounding from binary64 (the spec's bfloat16 example): 0x3F81, then 0xC020.
	if !bytes.Equal(half.Data, []byte{0x81, 0x3F, 0x20, 0xC0}) {
		t.Errorf("bfloat16 bytes %x", half.Data)
	}
	if _, err := NewInt64([]int64{1}, []int64{1}).Float64s(); err == nil {
		t.Error("Float64s on an int tensor succeeded")
	}
}

func TestValuesKeepTheirTypes(t *testing.T) {
	for _, v := range []any{true, int64(1), int64(math.MinInt64), math.Float64frombits(0x7FF80000DEADBEEF), "é", []byte{0, 255}} {
		m, err := EncodeValue(v)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeValue(m)
		if err != nil {
			t.Fatal(err)
		}
		switch x := v.(type) {
		case float64:
			if math.Float64bits(back.(float64)) != math.Float64bits(x) {
				t.Errorf("double bits changed")
			}
		case []byte:
			if !bytes.Equal(back.([]byte), x) {
				t.Errorf("bytes changed")
			}
		default:
			if back != v {
				t.Errorf("%T %v came back as %T %v", v, v, back, back)
			}
		}
	}
	if _, err := EncodeValue(uint64(math.MaxInt64) + 1); err == nil {
		t.Error("an integer past int64 was accepted (PLN-VAL-006)")
	}
	if _, err := EncodeValue(int(1)); err != nil {
		t.Error(err)
	}
	c := Config{"lr": 0.1, "epochs": int64(3), "flag": true}
	if c.Float64("lr", 0) != 0.1 || c.Int64("epochs", 0) != 3 || !c.Bool("flag", false) || c.Float64("epochs", -1) != -1 {
		t.Error("Config accessors")
	}
}
