package pollen

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"

	pb "github.com/pollen-fl/pollen/clients/go/gen/pollen/v1"
)

// Tensor is a decoded tensor: its dtype, its shape (outermost first, empty for a scalar) and
// its canonical bytes (C order, little endian, no padding), whatever codec carried it.
type Tensor struct {
	DType DType
	Shape []int64
	Data  []byte
	// Name is an optional label for people and logs; it never changes behaviour.
	Name string
}

// Numel is the number of elements. It is only meaningful for a well-formed tensor.
func (t *Tensor) Numel() int {
	n, _ := numel(t.Shape)
	return int(n)
}

func (t *Tensor) checkedNumel() (uint64, error) {
	n, err := numel(t.Shape)
	if err != nil {
		return 0, err
	}
	size := Itemsize(t.DType)
	if size == 0 {
		return 0, NewError(CodeDtypeUnsupported, "dtype", "dtype %v is not supported", t.DType)
	}
	if hi, lo := bits.Mul64(n, uint64(size)); hi != 0 || lo != uint64(len(t.Data)) {
		return 0, NewError(CodeTensorSizeMismatch, "", "%d data bytes for shape %v of %v", len(t.Data), t.Shape, t.DType)
	}
	return n, nil
}

// numel applies step 5 of the check order: no negative extent, and an element count that fits
// in an int64, computed without overflow and with a zero extent making the tensor empty first.
func numel(shape []int64) (uint64, error) {
	zero := false
	for i, d := range shape {
		if d < 0 {
			return 0, NewError(CodeShapeInvalid, "shape", "extent %d is negative (%d)", i, d)
		}
		if d == 0 {
			zero = true
		}
	}
	if zero {
		return 0, nil
	}
	n := uint64(1)
	for _, d := range shape {
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, NewError(CodeShapeInvalid, "shape", "element count of shape %v overflows", shape)
		}
		n = lo
	}
	return n, nil
}

// Limits are receive limits (spec chapter 13), with every field already resolved from the
// wire's "0 means default".
type Limits struct {
	MaxMessageBytes uint64
	MaxTensorBytes  uint64
	MaxTensors      uint32
	MaxRank         uint32
	MaxBlobBytes    uint64
	MaxMapEntries   uint32
}

// DefaultLimits are the defaults of spec chapter 13.
var DefaultLimits = Limits{
	MaxMessageBytes: 4 << 20,
	MaxTensorBytes:  1 << 34,
	MaxTensors:      65536,
	MaxRank:         32,
	MaxBlobBytes:    1 << 35,
	MaxMapEntries:   1024,
}

// limitsFromProto resolves a declared Limits message (PLN-LIM-001).
func limitsFromProto(m *pb.Limits) Limits {
	l := DefaultLimits
	if v := m.GetMaxMessageBytes(); v != 0 {
		l.MaxMessageBytes = v
	}
	if v := m.GetMaxTensorBytes(); v != 0 {
		l.MaxTensorBytes = v
	}
	if v := m.GetMaxTensors(); v != 0 {
		l.MaxTensors = v
	}
	if v := m.GetMaxRank(); v != 0 {
		l.MaxRank = v
	}
	if v := m.GetMaxBlobBytes(); v != 0 {
		l.MaxBlobBytes = v
	}
	if v := m.GetMaxMapEntries(); v != 0 {
		l.MaxMapEntries = v
	}
	return l
}

func (l Limits) toProto() *pb.Limits {
	return &pb.Limits{MaxMessageBytes: l.MaxMessageBytes, MaxTensorBytes: l.MaxTensorBytes,
		MaxTensors: l.MaxTensors, MaxRank: l.MaxRank, MaxBlobBytes: l.MaxBlobBytes,
		MaxMapEntries: l.MaxMapEntries}
}

// Decoder decodes received tensors with the check order of spec chapter 8.
type Decoder struct {
	Limits Limits
	// DTypes and Codecs are the allowed sets (the negotiated ones in a session); nil allows
	// everything this SDK implements.
	DTypes map[DType]bool
	Codecs map[string]bool
	// FetchBlob obtains and verifies the bytes of a blob payload (step 7); nil refuses blob
	// payloads with BLOB_NOT_FOUND.
	FetchBlob func(ref *pb.BlobRef) ([]byte, error)
}

// DecodeTensor checks one tensor in the spec's order and returns its canonical form. Errors
// are *Error with Field relative to the tensor ("shape", "blob.sha256", ...).
func (dec *Decoder) DecodeTensor(m *pb.Tensor) (*Tensor, error) {
	d := m.GetDtype()
	size := Itemsize(d)
	if size == 0 || (dec.DTypes != nil && !dec.DTypes[d]) { // 1
		return nil, NewError(CodeDtypeUnsupported, "dtype", "dtype %d is not supported", int32(d))
	}
	codec := m.GetCodec()
	if codec == "" {
		codec = CodecRaw // PLN-TEN-003
	}
	if !knownCodec(codec) || (dec.Codecs != nil && !dec.Codecs[codec]) { // 2
		e := NewError(CodeCodecUnsupported, "codec", "codec %q is not supported", codec)
		for _, c := range AllCodecs {
			if dec.Codecs == nil || dec.Codecs[c] {
				e.SupportedCodecs = append(e.SupportedCodecs, c)
			}
		}
		return nil, e
	}
	if !codecApplies(codec, d) { // 3
		return nil, NewError(CodeCodecDataInvalid, "codec", "codec %s does not apply to %v", codec, d)
	}
	shape := m.GetShape()
	if uint64(len(shape)) > uint64(dec.Limits.MaxRank) { // 4
		return nil, NewError(CodeLimitExceeded, "shape", "rank %d exceeds max_rank %d", len(shape), dec.Limits.MaxRank)
	}
	n, err := numel(shape) // 5
	if err != nil {
		return nil, err
	}
	hi, expected := bits.Mul64(n, uint64(size))
	if hi != 0 || expected > math.MaxInt64 {
		return nil, NewError(CodeShapeInvalid, "shape", "byte size of shape %v overflows", shape)
	}
	if expected > dec.Limits.MaxTensorBytes { // 6
		return nil, NewError(CodeLimitExceeded, "shape", "%d bytes exceed max_tensor_bytes %d", expected, dec.Limits.MaxTensorBytes)
	}
	payload := m.GetInlineData()
	if ref := m.GetBlob(); ref != nil { // 7
		if len(ref.GetSha256()) != 32 {
			return nil, NewError(CodeInvalidArgument, "blob.sha256", "sha256 is %d bytes, not 32", len(ref.GetSha256()))
		}
		if ref.GetSize() > dec.Limits.MaxBlobBytes {
			return nil, NewError(CodeLimitExceeded, "blob.size", "blob of %d bytes exceeds max_blob_bytes %d", ref.GetSize(), dec.Limits.MaxBlobBytes)
		}
		if dec.FetchBlob == nil {
			return nil, NewError(CodeBlobNotFound, "blob", "blob payloads are not available here")
		}
		payload, err = dec.FetchBlob(ref)
		if err != nil {
			return nil, withField(err, "blob")
		}
	}
	data, err := decodePayload(codec, d, n, expected, payload) // 8
	if err != nil {
		return nil, err
	}
	if d == Bool { // 9
		for i, b := range data {
			if b > 1 {
				return nil, NewError(CodeTensorValueInvalid, "", "bool element %d is 0x%02x", i, b)
			}
		}
	}
	return &Tensor{DType: d, Shape: append([]int64{}, shape...), Data: data, Name: m.GetName()}, nil
}

// DecodeTensors checks a tensor list: its length first, then each tensor in order
// (PLN-TEN-011). field names the list, e.g. "fit.parameters".
func (dec *Decoder) DecodeTensors(ms []*pb.Tensor, field string) ([]*Tensor, error) {
	if uint64(len(ms)) > uint64(dec.Limits.MaxTensors) {
		return nil, NewError(CodeLimitExceeded, field, "%d tensors exceed max_tensors %d", len(ms), dec.Limits.MaxTensors)
	}
	out := make([]*Tensor, len(ms))
	for i, m := range ms {
		t, err := dec.DecodeTensor(m)
		if err != nil {
			return nil, withField(err, fmt.Sprintf("%s[%d]", field, i))
		}
		out[i] = t
	}
	return out, nil
}

// Typed constructors and accessors. They copy, so a Tensor never aliases caller memory.

// NewFloat32 makes a FLOAT32 tensor; len(v) must match the shape.
func NewFloat32(shape []int64, v []float32) *Tensor {
	data := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(x))
	}
	return &Tensor{DType: Float32, Shape: append([]int64{}, shape...), Data: data}
}

// NewFloat64 makes a FLOAT64 tensor; len(v) must match the shape.
func NewFloat64(shape []int64, v []float64) *Tensor {
	data := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(data[8*i:], math.Float64bits(x))
	}
	return &Tensor{DType: Float64, Shape: append([]int64{}, shape...), Data: data}
}

// NewInt64 makes an INT64 tensor; len(v) must match the shape.
func NewInt64(shape []int64, v []int64) *Tensor {
	data := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(data[8*i:], uint64(x))
	}
	return &Tensor{DType: Int64, Shape: append([]int64{}, shape...), Data: data}
}

// Float64s returns the elements of any float tensor widened exactly to float64.
func (t *Tensor) Float64s() ([]float64, error) {
	if !isFloat(t.DType) {
		return nil, fmt.Errorf("pollen: Float64s on a %v tensor", t.DType)
	}
	out := make([]float64, len(t.Data)/Itemsize(t.DType))
	for i := range out {
		out[i] = floatAt(t.Data, t.DType, i)
	}
	return out, nil
}

// Float32s returns the elements of a FLOAT32 tensor.
func (t *Tensor) Float32s() ([]float32, error) {
	if t.DType != Float32 {
		return nil, fmt.Errorf("pollen: Float32s on a %v tensor", t.DType)
	}
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out, nil
}

// SetFloat64s replaces the elements of a float tensor, rounding each once to its dtype.
func (t *Tensor) SetFloat64s(v []float64) error {
	if !isFloat(t.DType) || len(v)*Itemsize(t.DType) != len(t.Data) {
		return fmt.Errorf("pollen: SetFloat64s with %d values on a %v tensor of %d bytes", len(v), t.DType, len(t.Data))
	}
	data := make([]byte, len(t.Data))
	for i, x := range v {
		putFloat(data, t.DType, i, x)
	}
	t.Data = data
	return nil
}
