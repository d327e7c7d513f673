package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/pollen-fl/pollen/clients/go/pollen"
)

// modelName is what get_properties reports (PLN-CNF-019).
const modelName = "pollen-conformance/1"

// model is the conformance model of spec Annex C.2: a pure function of the instruction and of
// its current parameters.
type model struct {
	mu      sync.Mutex
	current []*pollen.Tensor
}

func newModel() *model {
	return &model{current: []*pollen.Tensor{
		pollen.NewFloat32([]int64{2, 3}, []float32{0, 1, 2, 3, 4, 5}),
		pollen.NewInt64([]int64{3}, []int64{-1, 0, 1}),
	}}
}

var _ pollen.Querier = (*model)(nil)

// intKey reads an int config value; any other type counts as absent.
func intKey(cfg pollen.Config, key string, def int64) int64 { return cfg.Int64(key, def) }

// enter applies conformance.sleep_ms, then conformance.fail (PLN-CNF-010, -011).
func enter(ctx context.Context, method string, cfg pollen.Config) error {
	if ms := intKey(cfg, "conformance.sleep_ms", 0); ms > 0 {
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if cfg.String("conformance.fail", "") == method {
		return fmt.Errorf("%s failed on request (conformance.fail)", method)
	}
	return nil
}

// echo is the echo map of a config, plus extra entries.
func echo(cfg pollen.Config, extra pollen.Config) pollen.Config {
	out := pollen.Config{}
	for k, v := range cfg {
		if strings.HasPrefix(k, "echo.") {
			out[k] = v
		}
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

func (m *model) Fit(ctx context.Context, params []*pollen.Tensor, cfg pollen.Config) (*pollen.FitResult, error) {
	if err := enter(ctx, "fit", cfg); err != nil {
		return nil, err
	}
	delta := intKey(cfg, "conformance.delta", 1)
	out := make([]*pollen.Tensor, len(params))
	for i, p := range params {
		// int64 arithmetic wraps like the integer dtypes it is applied to.
		t, err := addStep(p, int64(i+1)*delta)
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	if cfg.String("conformance.break", "") == "fit" && len(out) > 0 {
		out = out[:len(out)-1] // PLN-CNF-015: the SDK must refuse this with APP_ERROR
	} else {
		m.mu.Lock()
		m.current = out
		m.mu.Unlock()
	}
	return &pollen.FitResult{Parameters: out, NumExamples: intKey(cfg, "conformance.num_examples", 1),
		Metrics: echo(cfg, pollen.Config{"conformance.tensors": int64(len(params))})}, nil
}

// addStep adds step to every element in the tensor's own dtype (PLN-CNF-013).
func addStep(p *pollen.Tensor, step int64) (*pollen.Tensor, error) {
	t := &pollen.Tensor{DType: p.DType, Shape: append([]int64{}, p.Shape...), Data: append([]byte{}, p.Data...)}
	d := t.Data
	s := uint64(step)
	switch p.DType {
	case pollen.Bool:
		if step%2 != 0 {
			for i := range d {
				d[i] ^= 1
			}
		}
	case pollen.Int8, pollen.Uint8:
		for i := range d {
			d[i] += byte(s)
		}
	case pollen.Int16, pollen.Uint16:
		for i := 0; i < len(d); i += 2 {
			binary.LittleEndian.PutUint16(d[i:], binary.LittleEndian.Uint16(d[i:])+uint16(s))
		}
	case pollen.Int32, pollen.Uint32:
		for i := 0; i < len(d); i += 4 {
			binary.LittleEndian.PutUint32(d[i:], binary.LittleEndian.Uint32(d[i:])+uint32(s))
		}
	case pollen.Int64, pollen.Uint64:
		for i := 0; i < len(d); i += 8 {
			binary.LittleEndian.PutUint64(d[i:], binary.LittleEndian.Uint64(d[i:])+s)
		}
	case pollen.Float32:
		for i := 0; i < len(d); i += 4 {
			x := math.Float32frombits(binary.LittleEndian.Uint32(d[i:]))
			binary.LittleEndian.PutUint32(d[i:], math.Float32bits(x+float32(step)))
		}
	case pollen.Float64:
		for i := 0; i < len(d); i += 8 {
			x := math.Float64frombits(binary.LittleEndian.Uint64(d[i:]))
			binary.LittleEndian.PutUint64(d[i:], math.Float64bits(x+float64(step)))
		}
	case pollen.Float16, pollen.BFloat16:
		// The half formats add in binary64, where the sum of a half and a (half-representable)
		// step is exact, then round once to the dtype: the IEEE result of the dtype's addition.
		one := &pollen.Tensor{DType: p.DType, Shape: []int64{1}, Data: make([]byte, 2)}
		if err := one.SetFloat64s([]float64{float64(step)}); err != nil {
			return nil, err
		}
		stepv, _ := one.Float64s()
		v, err := t.Float64s()
		if err != nil {
			return nil, err
		}
		for i := range v {
			v[i] += stepv[0]
		}
		if err := t.SetFloat64s(v); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("unknown dtype")
	}
	return t, nil
}

func (m *model) Evaluate(ctx context.Context, params []*pollen.Tensor, cfg pollen.Config) (*pollen.EvaluateResult, error) {
	if err := enter(ctx, "evaluate", cfg); err != nil {
		return nil, err
	}
	loss := 0.0
	for _, p := range params {
		for _, x := range elements(p) {
			loss += x
		}
	}
	return &pollen.EvaluateResult{Loss: loss, NumExamples: intKey(cfg, "conformance.num_examples", 1),
		Metrics: echo(cfg, pollen.Config{"conformance.tensors": int64(len(params))})}, nil
}

// elements converts every element to binary64, BOOL as 0 or 1 (PLN-CNF-016). Integers past
// 2^53 round to nearest, the only conversion binary64 allows.
func elements(p *pollen.Tensor) []float64 {
	if v, err := p.Float64s(); err == nil {
		return v
	}
	size := pollen.Itemsize(p.DType)
	out := make([]float64, 0, len(p.Data)/size)
	for i := 0; i+size <= len(p.Data); i += size {
		b := p.Data[i : i+size]
		var x float64
		switch p.DType {
		case pollen.Bool, pollen.Uint8:
			x = float64(b[0])
		case pollen.Int8:
			x = float64(int8(b[0]))
		case pollen.Int16:
			x = float64(int16(binary.LittleEndian.Uint16(b)))
		case pollen.Uint16:
			x = float64(binary.LittleEndian.Uint16(b))
		case pollen.Int32:
			x = float64(int32(binary.LittleEndian.Uint32(b)))
		case pollen.Uint32:
			x = float64(binary.LittleEndian.Uint32(b))
		case pollen.Int64:
			x = float64(int64(binary.LittleEndian.Uint64(b)))
		case pollen.Uint64:
			x = float64(binary.LittleEndian.Uint64(b))
		}
		out = append(out, x)
	}
	return out
}

func (m *model) Query(ctx context.Context, cfg pollen.Config, inputs []*pollen.Tensor) (*pollen.QueryResult, error) {
	if err := enter(ctx, "query", cfg); err != nil {
		return nil, err
	}
	return &pollen.QueryResult{Tensors: inputs, NumExamples: intKey(cfg, "conformance.num_examples", 0),
		Metrics: echo(cfg, pollen.Config{"conformance.tensors": int64(len(inputs))})}, nil
}

func (m *model) GetParameters(ctx context.Context, cfg pollen.Config) ([]*pollen.Tensor, error) {
	if err := enter(ctx, "get_parameters", cfg); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.current, nil
}

func (m *model) GetProperties(ctx context.Context, cfg pollen.Config) (pollen.Config, error) {
	if err := enter(ctx, "get_properties", cfg); err != nil {
		return nil, err
	}
	return echo(cfg, pollen.Config{"conformance.model": modelName}), nil
}
