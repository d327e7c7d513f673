// Command logreg is a Pollen client that trains a binary logistic regression, written in
// plain Go, on synthetic local data.
//
// Every node draws its own examples from one distribution: features x ~ N(0, 1)^d and label
// y = 1 when x · w* > 0, where w*_j = sin(j + 1) (TrueWeight). The data differ between nodes
// (the seed is the node id) but the federated model converges towards the direction of w*.
//
//	logreg -server 127.0.0.1:8443 -node-id node-1 -insecure
//
// The model is two FLOAT32 tensors, the weights [d] and the bias [1]. Fit runs local_epochs
// (int, default 5) full-batch gradient steps with learning rate lr (double, default 0.5).
package main

import (
	"context"
	"flag"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"

	"github.com/pollen-fl/pollen/clients/go/pollen"
)

// TrueWeight is coordinate j of the direction the labels come from.
func TrueWeight(j int) float64 { return math.Sin(float64(j) + 1) }

type logreg struct {
	pollen.UnimplementedClient
	x [][]float64
	y []float64
	d int
}

func newLogreg(nodeID string, d, n int) *logreg {
	h := fnv.New64a()
	h.Write([]byte(nodeID))
	rng := rand.New(rand.NewPCG(h.Sum64(), 0x9e3779b97f4a7c15))
	c := &logreg{d: d}
	for i := 0; i < n; i++ {
		row := make([]float64, d)
		dot := 0.0
		for j := range row {
			row[j] = rng.NormFloat64()
			dot += row[j] * TrueWeight(j)
		}
		label := 0.0
		if dot > 0 {
			label = 1
		}
		c.x = append(c.x, row)
		c.y = append(c.y, label)
	}
	return c
}

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

// unpack reads the model, refusing tensors of the wrong shape with a typed error the server
// will see as this task's failure.
func (c *logreg) unpack(params []*pollen.Tensor) ([]float64, float64, error) {
	if len(params) != 2 || params[0].Numel() != c.d || params[1].Numel() != 1 {
		return nil, 0, pollen.NewError(pollen.CodeAppError, "", "expected weights [%d] and bias [1]", c.d)
	}
	w, err := params[0].Float64s()
	if err != nil {
		return nil, 0, err
	}
	b, err := params[1].Float64s()
	if err != nil {
		return nil, 0, err
	}
	return w, b[0], nil
}

// loss is the mean log loss and the accuracy of (w, b) on the local data.
func (c *logreg) loss(w []float64, b float64) (float64, float64) {
	total, correct := 0.0, 0
	for i, row := range c.x {
		z := b
		for j, v := range row {
			z += w[j] * v
		}
		p := min(max(sigmoid(z), 1e-12), 1-1e-12)
		total -= c.y[i]*math.Log(p) + (1-c.y[i])*math.Log(1-p)
		if (p >= 0.5) == (c.y[i] == 1) {
			correct++
		}
	}
	n := float64(len(c.y))
	return total / n, float64(correct) / n
}

func (c *logreg) Fit(ctx context.Context, params []*pollen.Tensor, cfg pollen.Config) (*pollen.FitResult, error) {
	w, b, err := c.unpack(params)
	if err != nil {
		return nil, err
	}
	lr := cfg.Float64("lr", 0.5)
	epochs := cfg.Int64("local_epochs", 5)
	before, _ := c.loss(w, b)
	grad := make([]float64, c.d)
	for e := int64(0); e < epochs; e++ {
		if err := ctx.Err(); err != nil {
			return nil, err // the server no longer wants this result
		}
		clear(grad)
		gb := 0.0
		for i, row := range c.x {
			z := b
			for j, v := range row {
				z += w[j] * v
			}
			r := sigmoid(z) - c.y[i]
			for j, v := range row {
				grad[j] += r * v
			}
			gb += r
		}
		n := float64(len(c.y))
		for j := range w {
			w[j] -= lr * grad[j] / n
		}
		b -= lr * gb / n
	}
	wt, bt := params[0], params[1]
	out := []*pollen.Tensor{{DType: wt.DType, Shape: wt.Shape, Data: wt.Data},
		{DType: bt.DType, Shape: bt.Shape, Data: bt.Data}}
	if err := out[0].SetFloat64s(w); err != nil {
		return nil, err
	}
	if err := out[1].SetFloat64s([]float64{b}); err != nil {
		return nil, err
	}
	return &pollen.FitResult{Parameters: out, NumExamples: int64(len(c.y)),
		Metrics: pollen.Config{"loss_before": before}}, nil
}

func (c *logreg) Evaluate(ctx context.Context, params []*pollen.Tensor, cfg pollen.Config) (*pollen.EvaluateResult, error) {
	w, b, err := c.unpack(params)
	if err != nil {
		return nil, err
	}
	loss, acc := c.loss(w, b)
	return &pollen.EvaluateResult{Loss: loss, NumExamples: int64(len(c.y)),
		Metrics: pollen.Config{"accuracy": acc}}, nil
}

func (c *logreg) GetParameters(ctx context.Context, cfg pollen.Config) ([]*pollen.Tensor, error) {
	return []*pollen.Tensor{
		pollen.NewFloat32([]int64{int64(c.d)}, make([]float32, c.d)),
		pollen.NewFloat32([]int64{1}, []float32{0}),
	}, nil
}

func (c *logreg) GetProperties(ctx context.Context, cfg pollen.Config) (pollen.Config, error) {
	return pollen.Config{"num_examples": int64(len(c.y)), "features": int64(c.d)}, nil
}

func main() {
	server := flag.String("server", "127.0.0.1:8443", "server address, host:port")
	nodeID := flag.String("node-id", "", "node identity (required)")
	insecure := flag.Bool("insecure", false, "plaintext, without TLS (local development only)")
	ca := flag.String("ca", "", "PEM trust roots (default: the system's)")
	cert := flag.String("cert", "", "PEM client certificate, for mutual TLS")
	key := flag.String("key", "", "PEM key of the client certificate")
	features := flag.Int("features", 8, "number of features d")
	samples := flag.Int("samples", 256, "local examples")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *nodeID == "" || *features < 1 || *samples < 1 {
		fmt.Fprintln(os.Stderr, "logreg: -node-id is required; -features and -samples must be positive")
		os.Exit(2)
	}
	opts := pollen.Options{Server: *server, NodeID: *nodeID, Insecure: *insecure, Logger: logger,
		Agent: "logreg-example/0.1.0"}
	if !*insecure {
		cfg, err := pollen.LoadTLS(*ca, *cert, *key)
		if err != nil {
			logger.Error("logreg: TLS configuration", "err", err)
			os.Exit(2)
		}
		opts.TLS = cfg
	}
	// SIGTERM or SIGINT makes the client leave its session and return nil; so does a
	// shutdown instruction from the server (PLN-CTL-006: a normal end, status 0).
	if err := pollen.RunUntilSignal(newLogreg(*nodeID, *features, *samples), opts); err != nil {
		logger.Error("logreg: stopped", "err", err)
		os.Exit(1)
	}
}
