package pollen

import (
	"fmt"
	"math"
	"sort"
	"unicode/utf8"

	pb "github.com/pollen-fl/pollen/clients/go/gen/pollen/v1"
	"google.golang.org/protobuf/proto"
)

// Config is a map of typed values (spec chapter 10): configs, metrics and properties. Received
// values are always one of bool, int64, float64, string or []byte, so a type switch tells an
// int from a bool and a double keeps its bits. When sending, int, int8-int32, uint8-uint64 (in
// int64 range) and float32 are accepted too and converted exactly.
type Config map[string]any

// Float64 returns a double value, or def when the key is missing or of another type. An int64
// is not converted: the protocol keeps types apart.
func (c Config) Float64(key string, def float64) float64 {
	if v, ok := c[key].(float64); ok {
		return v
	}
	return def
}

// Int64 returns an int value, or def when the key is missing or of another type.
func (c Config) Int64(key string, def int64) int64 {
	if v, ok := c[key].(int64); ok {
		return v
	}
	return def
}

// Bool returns a bool value, or def when the key is missing or of another type.
func (c Config) Bool(key string, def bool) bool {
	if v, ok := c[key].(bool); ok {
		return v
	}
	return def
}

// String returns a string value, or def when the key is missing or of another type.
func (c Config) String(key string, def string) string {
	if v, ok := c[key].(string); ok {
		return v
	}
	return def
}

// DecodeValue turns a Value message into its Go value (PLN-VAL-002, -003).
func DecodeValue(m *pb.Value) (any, error) {
	switch k := m.GetKind().(type) {
	case *pb.Value_BoolValue:
		return k.BoolValue, nil
	case *pb.Value_IntValue:
		return k.IntValue, nil
	case *pb.Value_DoubleValue:
		return k.DoubleValue, nil
	case *pb.Value_StringValue:
		if !utf8.ValidString(k.StringValue) {
			return nil, NewError(CodeInvalidArgument, "", "string value is not valid UTF-8")
		}
		return k.StringValue, nil
	case *pb.Value_BytesValue:
		return append([]byte{}, k.BytesValue...), nil
	}
	return nil, NewError(CodeInvalidArgument, "", "value has no known member set")
}

// UnmarshalValue parses a serialized Value; malformed bytes are INVALID_ARGUMENT.
func UnmarshalValue(b []byte) (any, error) {
	var m pb.Value
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, NewError(CodeInvalidArgument, "", "malformed Value: %v", err)
	}
	return DecodeValue(&m)
}

// EncodeValue turns a Go value into a Value message, refusing what cannot travel exactly.
func EncodeValue(v any) (*pb.Value, error) {
	switch x := v.(type) {
	case bool:
		return &pb.Value{Kind: &pb.Value_BoolValue{BoolValue: x}}, nil
	case int64:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: x}}, nil
	case int:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(x)}}, nil
	case int32:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(x)}}, nil
	case int16:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(x)}}, nil
	case int8:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(x)}}, nil
	case uint8:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(x)}}, nil
	case uint16:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(x)}}, nil
	case uint32:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(x)}}, nil
	case uint:
		return EncodeValue(uint64(x))
	case uint64:
		if x > math.MaxInt64 { // PLN-VAL-006: refuse rather than wrap
			return nil, fmt.Errorf("pollen: integer %d is outside the int64 range", x)
		}
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(x)}}, nil
	case float64:
		return &pb.Value{Kind: &pb.Value_DoubleValue{DoubleValue: x}}, nil
	case float32:
		return &pb.Value{Kind: &pb.Value_DoubleValue{DoubleValue: float64(x)}}, nil
	case string:
		if !utf8.ValidString(x) {
			return nil, fmt.Errorf("pollen: string value is not valid UTF-8")
		}
		return &pb.Value{Kind: &pb.Value_StringValue{StringValue: x}}, nil
	case []byte:
		return &pb.Value{Kind: &pb.Value_BytesValue{BytesValue: append([]byte{}, x...)}}, nil
	}
	return nil, fmt.Errorf("pollen: a value of type %T cannot be sent", v)
}

// decodeMap checks a received map in the order of PLN-VAL-012 (count, keys, values).
func decodeMap(m map[string]*pb.Value, limits Limits, field string) (Config, error) {
	if uint64(len(m)) > uint64(limits.MaxMapEntries) {
		return nil, NewError(CodeLimitExceeded, field, "%d entries exceed max_map_entries %d", len(m), limits.MaxMapEntries)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys) // a deterministic choice of which bad entry Error.field names
	for _, k := range keys {
		if len(k) == 0 || len(k) > 256 {
			return nil, NewError(CodeInvalidArgument, field, "map key of %d bytes (1 to 256 allowed)", len(k))
		}
	}
	out := make(Config, len(m))
	for _, k := range keys {
		v, err := DecodeValue(m[k])
		if err != nil {
			return nil, withField(err, fmt.Sprintf("%s[%q]", field, k))
		}
		out[k] = v
	}
	return out, nil
}

// encodeMap converts an application map for sending, checking the peer's entry limit.
func encodeMap(c Config, limits Limits, field string) (map[string]*pb.Value, error) {
	if uint64(len(c)) > uint64(limits.MaxMapEntries) {
		return nil, fmt.Errorf("pollen: %s has %d entries, the server accepts %d", field, len(c), limits.MaxMapEntries)
	}
	out := make(map[string]*pb.Value, len(c))
	for k, v := range c {
		if len(k) == 0 || len(k) > 256 || !utf8.ValidString(k) {
			return nil, fmt.Errorf("pollen: %s key %q is not 1 to 256 bytes of UTF-8", field, k)
		}
		pv, err := EncodeValue(v)
		if err != nil {
			return nil, fmt.Errorf("%s[%q]: %w", field, k, err)
		}
		out[k] = pv
	}
	return out, nil
}
