package pollen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	pb "github.com/pollen-fl/pollen/clients/go/gen/pollen/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// fakeServer is a scripted Pollen server on 127.0.0.1 port 0. Each RPC calls a hook with the
// number of the call (from 1) and records the request; hooks left nil answer plainly.
type fakeServer struct {
	pb.UnimplementedFederationServiceServer
	pb.UnimplementedBlobServiceServer

	mu         sync.Mutex
	calls      []string
	handshakes []*pb.HandshakeRequest
	polls      []*pb.PollTaskRequest
	submits    []*pb.SubmitResultRequest
	heartbeats []*pb.HeartbeatRequest
	leaves     []*pb.LeaveRequest
	downloads  []*pb.DownloadBlobRequest
	uploads    []*pb.UploadBlobRequest
	blobs      map[string]*Assembler

	// pollStarts and hbStarts are when each PollTask and Heartbeat arrived; hbDeadlines the
	// time each Heartbeat had left until its deadline on arrival.
	pollStarts  []time.Time
	hbStarts    []time.Time
	hbDeadlines []time.Duration

	// hbEvery is the heartbeat interval the handshake announces; limits the server's.
	hbEvery time.Duration
	limits  *pb.Limits
	chunk   uint64
	minor   uint32 // the minor version the handshake selects

	onHandshake func(n int, r *pb.HandshakeRequest) error
	onPoll      func(n int, r *pb.PollTaskRequest) (*pb.Task, error)
	onSubmit    func(n int, r *pb.SubmitResultRequest) (*pb.SubmitResultResponse, error)
	onHeartbeat func(n int, r *pb.HeartbeatRequest) (bool, error)
	onDownload  func(n int, r *pb.DownloadBlobRequest, send func(off uint64, data []byte, total uint64) error) error
	// onUpload runs before the chunk is taken (with mu held); an error fails the call.
	onUpload func(n int, r *pb.UploadBlobRequest) error
}

func newFake() *fakeServer {
	return &fakeServer{hbEvery: time.Second, chunk: 16384, blobs: map[string]*Assembler{}}
}

// typedError is how hooks fail an RPC the way a Pollen server does: the status of the error
// table and the serialized Error in the pollen-error-bin trailer, which out() attaches.
type typedError struct {
	st  codes.Code
	err *pb.Error
}

func (e *typedError) Error() string { return e.err.GetMessage() }

func typed(_ context.Context, st codes.Code, code Code, retryAfterMs uint64) error {
	return &typedError{st, &pb.Error{Code: code, Message: CodeName(code),
		Retryable: errorTable[code] == retryYes, RetryAfterMs: retryAfterMs}}
}

func out(ctx context.Context, err error) error {
	var te *typedError
	if !errors.As(err, &te) {
		return err
	}
	b, _ := proto.Marshal(te.err)
	_ = grpc.SetTrailer(ctx, metadata.Pairs(errorTrailer, string(b)))
	return status.Error(te.st, te.err.GetMessage())
}

func (f *fakeServer) record(name string) int {
	f.calls = append(f.calls, name)
	n := 0
	for _, c := range f.calls {
		if c == name {
			n++
		}
	}
	return n
}

func (f *fakeServer) Handshake(ctx context.Context, r *pb.HandshakeRequest) (*pb.HandshakeResponse, error) {
	f.mu.Lock()
	n := f.record("Handshake")
	f.handshakes = append(f.handshakes, r)
	hook := f.onHandshake
	f.mu.Unlock()
	if hook != nil {
		if err := hook(n, r); err != nil {
			return nil, out(ctx, err)
		}
	}
	return &pb.HandshakeResponse{
		Version:   &pb.ProtocolVersion{Major: 1, Minor: f.minor},
		SessionId: fmt.Sprintf("s%d", n),
		Capabilities: &pb.Capabilities{Codecs: []string{CodecRaw, CodecZstd},
			Dtypes: AllDTypes, Limits: f.limits},
		HeartbeatIntervalMs: uint64(f.hbEvery.Milliseconds()),
		MaxPollWaitMs:       1000, SessionTimeoutMs: 60000, ChunkSizeBytes: f.chunk,
		Agent: "fake/1",
	}, nil
}

func (f *fakeServer) PollTask(ctx context.Context, r *pb.PollTaskRequest) (*pb.PollTaskResponse, error) {
	f.mu.Lock()
	n := f.record("PollTask")
	f.polls = append(f.polls, r)
	f.pollStarts = append(f.pollStarts, time.Now())
	hook := f.onPoll
	f.mu.Unlock()
	if hook == nil {
		return &pb.PollTaskResponse{Task: shutdownTask()}, nil
	}
	t, err := hook(n, r)
	if err != nil {
		return nil, out(ctx, err)
	}
	return &pb.PollTaskResponse{Task: t}, nil
}

func (f *fakeServer) SubmitResult(ctx context.Context, r *pb.SubmitResultRequest) (*pb.SubmitResultResponse, error) {
	f.mu.Lock()
	n := f.record("SubmitResult")
	f.submits = append(f.submits, r)
	hook := f.onSubmit
	f.mu.Unlock()
	if hook == nil {
		return &pb.SubmitResultResponse{}, nil
	}
	resp, err := hook(n, r)
	return resp, out(ctx, err)
}

func (f *fakeServer) Heartbeat(ctx context.Context, r *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	f.mu.Lock()
	n := f.record("Heartbeat")
	f.heartbeats = append(f.heartbeats, r)
	f.hbStarts = append(f.hbStarts, time.Now())
	if dl, ok := ctx.Deadline(); ok {
		f.hbDeadlines = append(f.hbDeadlines, time.Until(dl))
	} else {
		f.hbDeadlines = append(f.hbDeadlines, -1) // no deadline at all
	}
	hook := f.onHeartbeat
	f.mu.Unlock()
	if hook == nil {
		return &pb.HeartbeatResponse{TaskActive: true}, nil
	}
	active, err := hook(n, r)
	if err != nil {
		return nil, out(ctx, err)
	}
	return &pb.HeartbeatResponse{TaskActive: active}, nil
}

func (f *fakeServer) Leave(ctx context.Context, r *pb.LeaveRequest) (*pb.LeaveResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("Leave")
	f.leaves = append(f.leaves, r)
	return &pb.LeaveResponse{}, nil
}

func (f *fakeServer) DownloadBlob(r *pb.DownloadBlobRequest, s grpc.ServerStreamingServer[pb.DownloadBlobResponse]) error {
	f.mu.Lock()
	n := f.record("DownloadBlob")
	f.downloads = append(f.downloads, r)
	hook := f.onDownload
	f.mu.Unlock()
	return out(s.Context(), hook(n, r, func(off uint64, data []byte, total uint64) error {
		return s.Send(&pb.DownloadBlobResponse{Offset: off, Data: data, TotalSize: total})
	}))
}

// UploadBlob follows the server rules of chapter 11 with the SDK's own Assembler.
func (f *fakeServer) UploadBlob(ctx context.Context, r *pb.UploadBlobRequest) (*pb.UploadBlobResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.record("UploadBlob")
	f.uploads = append(f.uploads, r)
	if f.onUpload != nil {
		if err := f.onUpload(n, r); err != nil {
			return nil, out(ctx, err)
		}
	}
	if uint64(len(r.GetData())) > f.chunk {
		return nil, out(ctx, typed(ctx, codes.ResourceExhausted, CodeLimitExceeded, 0))
	}
	key := string(r.GetSha256())
	a := f.blobs[key]
	if a == nil {
		a = NewAssembler(r.GetSha256(), r.GetTotalSize())
		f.blobs[key] = a
	}
	if _, err := a.Feed(r.GetOffset(), r.GetData()); err != nil {
		return nil, out(ctx, typed(ctx, codes.InvalidArgument, CodeInvalidArgument, 0))
	}
	if a.Committed() == r.GetTotalSize() {
		if _, err := a.Finish(); err != nil {
			delete(f.blobs, key)
			return nil, out(ctx, typed(ctx, codes.DataLoss, CodeBlobDigestMismatch, 0))
		}
		return &pb.UploadBlobResponse{CommittedSize: a.Committed(), Complete: true}, nil
	}
	return &pb.UploadBlobResponse{CommittedSize: a.Committed()}, nil
}

func (f *fakeServer) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string{}, f.calls...)
}

// start serves f on 127.0.0.1:0 until the test ends.
func (f *fakeServer) start(t *testing.T, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	pb.RegisterFederationServiceServer(s, f)
	pb.RegisterBlobServiceServer(s, f)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func shutdownTask() *pb.Task {
	return &pb.Task{TaskId: "stop", Instruction: &pb.Task_Shutdown{Shutdown: &pb.ShutdownInstruction{Reason: "done"}}}
}

func fitTask(id string, params ...*pb.Tensor) *pb.Task {
	return &pb.Task{TaskId: id, RunId: "run", Round: 1,
		Instruction: &pb.Task_Fit{Fit: &pb.FitInstruction{Parameters: params}}}
}

func rawTensor(t *Tensor) *pb.Tensor {
	return &pb.Tensor{Dtype: t.DType, Shape: t.Shape, Payload: &pb.Tensor_InlineData{InlineData: t.Data}}
}

// sleeps records the backoff waits instead of waiting, so tests never depend on time.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) bool {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err() == nil
}

func (s *sleeps) all() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration{}, s.d...)
}

func testOptions(addr string, sl *sleeps) Options {
	return Options{Server: addr, NodeID: "node-7", Insecure: true, CallTimeout: 10 * time.Second,
		Logger: discardLogger(), rand: func() float64 { return 0 }, sleep: sl.sleep}
}

// runBounded runs the client and fails the test instead of hanging.
func runBounded(t *testing.T, app Client, opts Options) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Run(ctx, app, opts)
	if ctx.Err() != nil {
		t.Fatalf("Run did not finish: %v", ctx.Err())
	}
	return err
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
