package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	pb "github.com/pollen-fl/pollen/clients/go/gen/pollen/v1"
	"github.com/pollen-fl/pollen/clients/go/pollen"
	"google.golang.org/protobuf/proto"
)

// request is one golden vector with its files inlined (Annex C.4).
type request struct {
	Type       string            `json:"type"`
	TcID       int64             `json:"tcId"`
	GroupCodec string            `json:"groupCodec"`
	InputHex   string            `json:"inputHex"`
	DType      *string           `json:"dtype"`
	Shape      []int64           `json:"shape"`
	Limits     map[string]uint64 `json:"limits"`
	Codecs     []string          `json:"codecs"`
	DTypes     []string          `json:"dtypes"`
	Params     map[string]int    `json:"params"`
	BlobSha256 string            `json:"blobSha256"`
	TotalSize  uint64            `json:"totalSize"`
	Chunks     []struct {
		Offset  uint64 `json:"offset"`
		DataHex string `json:"dataHex"`
	} `json:"chunks"`
}

type chunkAnswer struct {
	Outcome       string `json:"outcome,omitempty"`
	Error         string `json:"error,omitempty"`
	CommittedSize uint64 `json:"committedSize"`
}

type answer struct {
	TcID      int64         `json:"tcId"`
	Result    string        `json:"result"`
	Error     string        `json:"error,omitempty"`
	DType     string        `json:"dtype,omitempty"`
	Shape     []int64       `json:"shape,omitempty"`
	OutputHex *string       `json:"outputHex,omitempty"`
	Chunks    []chunkAnswer `json:"chunks,omitempty"`
	ValueType string        `json:"valueType,omitempty"`
	Value     any           `json:"value,omitempty"`
}

var dtypeNames = map[pollen.DType]string{pollen.Bool: "bool", pollen.Int8: "int8", pollen.Int16: "int16",
	pollen.Int32: "int32", pollen.Int64: "int64", pollen.Uint8: "uint8", pollen.Uint16: "uint16",
	pollen.Uint32: "uint32", pollen.Uint64: "uint64", pollen.Float16: "float16",
	pollen.BFloat16: "bfloat16", pollen.Float32: "float32", pollen.Float64: "float64"}

func dtypeByName(name string) (pollen.DType, bool) {
	for d, n := range dtypeNames {
		if n == name {
			return d, true
		}
	}
	return 0, false
}

// serveCodec answers frames until the input ends (PLN-CNF-020).
func serveCodec(in io.Reader, out io.Writer) error {
	r := bufio.NewReader(in)
	w := bufio.NewWriter(out)
	for {
		var n uint32
		if err := binary.Read(r, binary.BigEndian, &n); err != nil {
			if errors.Is(err, io.EOF) {
				return w.Flush()
			}
			return err
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return err
		}
		var req request
		if err := json.Unmarshal(body, &req); err != nil {
			return fmt.Errorf("request: %w", err)
		}
		a := handle(&req)
		a.TcID = req.TcID
		b, err := json.Marshal(a)
		if err != nil {
			return err
		}
		if err := binary.Write(w, binary.BigEndian, uint32(len(b))); err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

func fail(err error) *answer {
	code := pollen.CodeOf(err)
	if code == 0 {
		code = pollen.CodeInternal
	}
	return &answer{Result: "error", Error: pollen.CodeName(code)}
}

func hexOut(b []byte) *string {
	s := hex.EncodeToString(b)
	return &s
}

func handle(req *request) *answer {
	input, err := hex.DecodeString(req.InputHex)
	if err != nil {
		return fail(err)
	}
	switch req.Type {
	case "TensorDecode":
		return decode(req, input)
	case "TensorEncode":
		d, ok := dtypeByName(deref(req.DType))
		if !ok {
			return &answer{Result: "skipped"}
		}
		payload, err := pollen.EncodePayload(&pollen.Tensor{DType: d, Shape: req.Shape, Data: input},
			req.GroupCodec, pollen.EncodeOptions{K: req.Params["k"]})
		if err != nil {
			return fail(err)
		}
		return &answer{Result: "ok", OutputHex: hexOut(payload)}
	case "ChunkSet":
		sha, _ := hex.DecodeString(req.BlobSha256)
		a := pollen.NewAssembler(sha, req.TotalSize)
		var chunks []chunkAnswer
		for _, c := range req.Chunks {
			data, _ := hex.DecodeString(c.DataHex)
			outcome, err := a.Feed(c.Offset, data)
			ca := chunkAnswer{Outcome: string(outcome), CommittedSize: a.Committed()}
			if err != nil {
				ca = chunkAnswer{Error: pollen.CodeName(pollen.CodeOf(err)), CommittedSize: a.Committed()}
			}
			chunks = append(chunks, ca)
		}
		blob, err := a.Finish()
		if err != nil {
			return fail(err)
		}
		return &answer{Result: "ok", Chunks: chunks, OutputHex: hexOut(blob)}
	case "Value":
		v, err := pollen.UnmarshalValue(input)
		if err != nil {
			return fail(err)
		}
		return valueAnswer(v)
	}
	return &answer{Result: "skipped"}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func decode(req *request, input []byte) *answer {
	dec := pollen.Decoder{Limits: pollen.DefaultLimits}
	for k, v := range req.Limits {
		switch k {
		case "maxMessageBytes":
			dec.Limits.MaxMessageBytes = v
		case "maxTensorBytes":
			dec.Limits.MaxTensorBytes = v
		case "maxTensors":
			dec.Limits.MaxTensors = uint32(v)
		case "maxRank":
			dec.Limits.MaxRank = uint32(v)
		case "maxBlobBytes":
			dec.Limits.MaxBlobBytes = v
		case "maxMapEntries":
			dec.Limits.MaxMapEntries = uint32(v)
		}
	}
	if req.Codecs != nil {
		dec.Codecs = map[string]bool{}
		for _, c := range req.Codecs {
			dec.Codecs[c] = true
		}
	}
	if req.DTypes != nil {
		dec.DTypes = map[pollen.DType]bool{}
		for _, n := range req.DTypes {
			if d, ok := dtypeByName(n); ok {
				dec.DTypes[d] = true
			}
		}
	}
	var m pb.Tensor
	if err := proto.Unmarshal(input, &m); err != nil {
		return fail(pollen.NewError(pollen.CodeInvalidArgument, "", "malformed Tensor: %v", err))
	}
	t, err := dec.DecodeTensor(&m)
	if err != nil {
		return fail(err)
	}
	shape := t.Shape
	if shape == nil {
		shape = []int64{}
	}
	return &answer{Result: "ok", DType: dtypeNames[t.DType], Shape: shape, OutputHex: hexOut(t.Data)}
}

// valueAnswer writes a value in the manifest's representation.
func valueAnswer(v any) *answer {
	switch x := v.(type) {
	case bool:
		return &answer{Result: "ok", ValueType: "bool", Value: x}
	case int64:
		return &answer{Result: "ok", ValueType: "int64", Value: strconv.FormatInt(x, 10)}
	case float64:
		return &answer{Result: "ok", ValueType: "double", Value: fmt.Sprintf("%016x", math.Float64bits(x))}
	case string:
		return &answer{Result: "ok", ValueType: "string", Value: x}
	case []byte:
		return &answer{Result: "ok", ValueType: "bytes", Value: hex.EncodeToString(x)}
	}
	return fail(errors.New("unknown value type"))
}
