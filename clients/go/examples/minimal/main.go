// Command minimal is the complete minimal client of clients/go/README.md; it is built by
// `go vet ./...`, so the README's code keeps compiling.
package main

import (
	"context"
	"log"

	"github.com/pollen-fl/pollen/clients/go/pollen"
)

// scale multiplies the model by the config value "factor" (a double) and reports one example.
type scale struct {
	pollen.UnimplementedClient // GetParameters and Evaluate: not supported; GetProperties: none
}

func (scale) Fit(ctx context.Context, params []*pollen.Tensor, cfg pollen.Config) (*pollen.FitResult, error) {
	factor := cfg.Float64("factor", 0.5)
	out := make([]*pollen.Tensor, len(params))
	for i, p := range params {
		v, err := p.Float64s() // any float dtype, widened exactly
		if err != nil {
			return nil, err // reported to the server as APP_ERROR; the client keeps running
		}
		for j := range v {
			v[j] *= factor
		}
		t := &pollen.Tensor{DType: p.DType, Shape: p.Shape, Data: make([]byte, len(p.Data))}
		if err := t.SetFloat64s(v); err != nil { // rounded once to the tensor's dtype
			return nil, err
		}
		out[i] = t
	}
	return &pollen.FitResult{Parameters: out, NumExamples: 1, Metrics: pollen.Config{"factor": factor}}, nil
}

func main() {
	opts := pollen.Options{Server: "127.0.0.1:8443", NodeID: "node-1", Insecure: true}
	// Returns nil after a shutdown instruction or SIGTERM/SIGINT (having left the session).
	if err := pollen.RunUntilSignal(scale{}, opts); err != nil {
		log.Fatal(err)
	}
}
