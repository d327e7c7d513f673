package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/pollen-fl/pollen/clients/go/pollen"
)

func TestAddStepInTheTensorsDtype(t *testing.T) {
	cases := []struct {
		dtype    pollen.DType
		in, want []byte
		step     int64
	}{
		{pollen.Int8, []byte{0x7F, 0xFF}, []byte{0x80, 0x00}, 1},                                        // 127+1 wraps to -128
		{pollen.Uint16, []byte{0xFF, 0xFF}, []byte{0x01, 0x00}, 2},                                      // 65535+2 wraps to 1
		{pollen.Int32, []byte{0, 0, 0, 0}, []byte{0xFD, 0xFF, 0xFF, 0xFF}, -3},                          // negative delta
		{pollen.Bool, []byte{0, 1}, []byte{1, 0}, 3},                                                    // odd step negates
		{pollen.Bool, []byte{0, 1}, []byte{0, 1}, 4},                                                    // even step keeps
		{pollen.Float16, []byte{0x00, 0x3C}, []byte{0x00, 0x42}, 2},                                     // 1.0 + 2 = 3.0
		{pollen.BFloat16, []byte{0x80, 0x3F}, []byte{0x40, 0x40}, 2},                                    // 1.0 + 2 = 3.0
		{pollen.Float64, []byte{0, 0, 0, 0, 0, 0, 0xF0, 0x3F}, []byte{0, 0, 0, 0, 0, 0, 0x10, 0x40}, 3}, // 1+3
	}
	for _, c := range cases {
		got, err := addStep(&pollen.Tensor{DType: c.dtype, Shape: []int64{int64(len(c.in) / pollen.Itemsize(c.dtype))}, Data: c.in}, c.step)
		if err != nil || !bytes.Equal(got.Data, c.want) {
			t.Errorf("%v + %d: got %x, want %x (%v)", c.dtype, c.step, got.Data, c.want, err)
		}
	}
}

func TestModelFollowsAnnexC(t *testing.T) {
	m := newModel()
	ctx := context.Background()
	params, _ := m.GetParameters(ctx, nil)
	cfg := pollen.Config{"conformance.delta": int64(2), "echo.x": int64(5), "other": true}
	res, err := m.Fit(ctx, params, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := res.Parameters[0].Float32s()
	if f[0] != 2 || f[5] != 7 || res.NumExamples != 1 {
		t.Errorf("fit gave %v, %d examples", f, res.NumExamples)
	}
	if len(res.Metrics) != 2 || res.Metrics["echo.x"] != int64(5) || res.Metrics["conformance.tensors"] != int64(2) {
		t.Errorf("metrics %v", res.Metrics)
	}
	if now, _ := m.GetParameters(ctx, nil); now[1].Data[0] != 3 { // int64 -1 + 2 × 2
		t.Errorf("fit did not become the current parameters")
	}
	if _, err := m.Fit(ctx, params, pollen.Config{"conformance.fail": "fit"}); err == nil {
		t.Error("conformance.fail did not fail")
	}
	ev, _ := m.Evaluate(ctx, []*pollen.Tensor{{DType: pollen.Bool, Shape: []int64{2}, Data: []byte{1, 1}},
		pollen.NewInt64([]int64{1}, []int64{-5})}, nil)
	if ev.Loss != -3 {
		t.Errorf("evaluate loss %v, want -3", ev.Loss)
	}
	props, _ := m.GetProperties(ctx, pollen.Config{"echo.y": "s"})
	if props["conformance.model"] != modelName || props["echo.y"] != "s" {
		t.Errorf("properties %v", props)
	}
}
