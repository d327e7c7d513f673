package pollen

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"time"
)

// Client is what an application implements: the work instructions of spec chapter 6, over
// decoded tensors and typed values. Embed UnimplementedClient to implement only some of them.
//
// A method that returns ErrUnsupported makes the SDK report UNSUPPORTED_INSTRUCTION; any other
// error is reported as APP_ERROR, or with its own code when it is an *Error. A panic is
// recovered and reported as APP_ERROR: an application failure never ends the client
// (PLN-TSK-026). The context is cancelled when the server no longer wants the result, the
// task's deadline passes, or the client stops.
type Client interface {
	Fit(ctx context.Context, parameters []*Tensor, config Config) (*FitResult, error)
	Evaluate(ctx context.Context, parameters []*Tensor, config Config) (*EvaluateResult, error)
	GetParameters(ctx context.Context, config Config) ([]*Tensor, error)
	GetProperties(ctx context.Context, config Config) (Config, error)
}

// Querier is implemented by clients that answer federated-analytics queries; a client that
// implements it advertises the "query" feature (PLN-QRY-002).
type Querier interface {
	Query(ctx context.Context, config Config, inputs []*Tensor) (*QueryResult, error)
}

// FitResult is the model after local training: one tensor per instruction tensor, same dtype
// and shape, full values (not a difference).
type FitResult struct {
	Parameters  []*Tensor
	NumExamples int64
	Metrics     Config
}

// EvaluateResult is a measurement of the given model on local data.
type EvaluateResult struct {
	Loss        float64
	NumExamples int64
	Metrics     Config
}

// QueryResult holds statistics over local data.
type QueryResult struct {
	Metrics     Config
	Tensors     []*Tensor
	NumExamples int64
}

// ErrUnsupported is returned by a Client method the application does not implement.
var ErrUnsupported = errors.New("pollen: instruction not implemented")

// UnimplementedClient answers every work instruction with ErrUnsupported, except
// GetProperties, which answers with no properties (PLN-PRP-001).
type UnimplementedClient struct{}

func (UnimplementedClient) Fit(context.Context, []*Tensor, Config) (*FitResult, error) {
	return nil, ErrUnsupported
}

func (UnimplementedClient) Evaluate(context.Context, []*Tensor, Config) (*EvaluateResult, error) {
	return nil, ErrUnsupported
}

func (UnimplementedClient) GetParameters(context.Context, Config) ([]*Tensor, error) {
	return nil, ErrUnsupported
}

func (UnimplementedClient) GetProperties(context.Context, Config) (Config, error) {
	return Config{}, nil
}

// Backoff holds the retry parameters of spec chapter 12. The zero value means the spec's
// defaults; values that would retry sooner than the spec allows are raised to its floor.
type Backoff struct {
	Initial    time.Duration // 1 s
	Multiplier float64       // 1.6
	Jitter     float64       // 0.2, i.e. ±20 %
	Max        time.Duration // 120 s
	// AttemptsPerCall is the retry budget of one call; when it is spent the connection is
	// treated as lost and the client reconnects (PLN-RTY-011). Default 8.
	AttemptsPerCall int
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial < time.Second {
		b.Initial = time.Second
	}
	if b.Multiplier < 1.6 {
		b.Multiplier = 1.6
	}
	if b.Jitter <= 0 || b.Jitter > 0.2 {
		b.Jitter = 0.2
	}
	if b.Max < 120*time.Second {
		b.Max = 120 * time.Second
	}
	if b.AttemptsPerCall <= 0 {
		b.AttemptsPerCall = 8
	}
	return b
}

// delay is the wait before retry n (from 1): base(n) × U(1-j, 1+j), at least retryAfter.
func (b Backoff) delay(n int, retryAfter time.Duration, rnd func() float64) time.Duration {
	base := float64(b.Initial)
	for i := 1; i < n && base < float64(b.Max); i++ {
		base *= b.Multiplier
	}
	base = min(base, float64(b.Max))
	d := time.Duration(base * (1 - b.Jitter + 2*b.Jitter*rnd()))
	return max(d, retryAfter)
}

// Options configure Run.
type Options struct {
	// Server is the address to dial, host:port.
	Server string
	// NodeID is this node's identity, the same in every handshake (PLN-HS-028): 1 to 128
	// bytes of A-Z a-z 0-9 . _ : -.
	NodeID string

	// Insecure selects plaintext. Plaintext is never the default (PLN-SEC-001); without it
	// the client uses TLS with TLS (or the system roots when TLS is nil).
	Insecure bool
	// TLS configures the TLS client: RootCAs to trust, Certificates for mutual TLS. See
	// LoadTLS. MinVersion below TLS 1.2 is raised to it (PLN-SEC-003).
	TLS *tls.Config

	// Codecs and DTypes are offered in the handshake; nil offers everything this SDK
	// implements. "raw" is always offered.
	Codecs []string
	DTypes []DType
	// Limits are this client's receive limits; zero fields mean the spec defaults.
	Limits Limits
	// ResultCodec is the codec result tensors are sent with when negotiated and applicable
	// to the tensor's dtype, "raw" otherwise. Lossy codecs only on the run's request
	// (PLN-HS-019), so leave it empty unless the run asks for one.
	ResultCodec        string
	ResultCodecOptions EncodeOptions

	Backoff Backoff
	// CallTimeout is the deadline of each unary call other than PollTask (default 30 s).
	CallTimeout time.Duration
	// Agent identifies the application in server logs; the SDK adds its own name.
	Agent  string
	Logger *slog.Logger

	// rand draws the jitter; tests replace it.
	rand func() float64
	// sleep waits, or returns false when ctx ends first; tests replace it.
	sleep func(ctx context.Context, d time.Duration) bool
}

// LoadTLS builds a TLS configuration from PEM files: caFile (trust roots; empty uses the
// system's), and certFile with keyFile for a client certificate (mutual TLS; both or neither).
func LoadTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("pollen: no certificate in %s", caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("pollen: a client certificate needs its key, and a key its certificate")
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

const sdkAgent = "pollen-go/0.1.0"

func validNodeID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

func (o *Options) normalize() error {
	if o.Server == "" {
		return errors.New("pollen: Options.Server is empty")
	}
	if !validNodeID(o.NodeID) {
		return fmt.Errorf("pollen: node id %q is not 1 to 128 bytes of A-Z a-z 0-9 . _ : -", o.NodeID)
	}
	if o.Insecure && o.TLS != nil {
		return errors.New("pollen: Insecure and TLS are both set")
	}
	if o.Codecs == nil {
		o.Codecs = AllCodecs
	}
	hasRaw := false
	for _, c := range o.Codecs {
		if !knownCodec(c) {
			return fmt.Errorf("pollen: codec %q is not implemented", c)
		}
		hasRaw = hasRaw || c == CodecRaw
	}
	if !hasRaw { // PLN-HS-004
		o.Codecs = append([]string{CodecRaw}, o.Codecs...)
	}
	if o.DTypes == nil {
		o.DTypes = AllDTypes
	}
	if o.ResultCodec == "" {
		o.ResultCodec = CodecRaw
	}
	if o.Limits == (Limits{}) {
		o.Limits = DefaultLimits
	} else {
		o.Limits = limitsFromProto(o.Limits.toProto())
	}
	o.Backoff = o.Backoff.withDefaults()
	if o.CallTimeout <= 0 {
		o.CallTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.rand == nil {
		o.rand = rand.Float64
	}
	if o.sleep == nil {
		o.sleep = func(ctx context.Context, d time.Duration) bool {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return true
			case <-ctx.Done():
				return false
			}
		}
	}
	return nil
}
