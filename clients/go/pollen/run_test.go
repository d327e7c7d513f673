package pollen

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/pollen-fl/pollen/clients/go/gen/pollen/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

type testApp struct {
	UnimplementedClient
	fits atomic.Int32
	fit  func(ctx context.Context, params []*Tensor, cfg Config) (*FitResult, error)
}

func (a *testApp) Fit(ctx context.Context, params []*Tensor, cfg Config) (*FitResult, error) {
	a.fits.Add(1)
	if a.fit != nil {
		return a.fit(ctx, params, cfg)
	}
	return &FitResult{Parameters: params, NumExamples: 3}, nil
}

func TestBackoffFollowsTheSpecFloorAndCap(t *testing.T) {
	b := Backoff{}.withDefaults()
	low := func() float64 { return 0 }
	high := func() float64 { return 0.999999 }
	// 0.8 × base(n) is the earliest retry n (PLN-RTY-007); base caps at 120 s.
	for n, base := range map[int]float64{1: 1000, 2: 1600, 3: 2560, 12: 120000, 40: 120000} {
		lo := b.delay(n, 0, low)
		hi := b.delay(n, 0, high)
		if lo != time.Duration(0.8*base*float64(time.Millisecond)) {
			t.Errorf("retry %d: lowest delay %v, want 0.8 × %v ms", n, lo, base)
		}
		if hi <= lo || hi > time.Duration(1.2*base*float64(time.Millisecond)) {
			t.Errorf("retry %d: highest delay %v outside (lo, 1.2 × %v ms]", n, hi, base)
		}
	}
	if d := b.delay(1, 5*time.Second, low); d != 5*time.Second {
		t.Errorf("retry_after_ms 5000 gave %v", d)
	}
	// Settings that would retry sooner than the spec allows are raised to its floor.
	fast := Backoff{Initial: time.Millisecond, Multiplier: 1.01, Jitter: 0.9}.withDefaults()
	if d := fast.delay(2, 0, low); d < 1280*time.Millisecond {
		t.Errorf("a fast configuration retried after %v", d)
	}
}

func TestErrorTrailerDecidesRetries(t *testing.T) {
	mk := func(code Code, retryable bool) map[string][]string {
		b, _ := proto.Marshal(&pb.Error{Code: code, Retryable: retryable, Field: "x"})
		return map[string][]string{errorTrailer: {string(b)}}
	}
	cases := []struct {
		name      string
		st        codes.Code
		trailer   map[string][]string
		code      Code
		retryable bool
	}{
		{"typed UNAVAILABLE", codes.Unavailable, mk(CodeUnavailable, true), CodeUnavailable, true},
		// The table wins over the flag for known codes (PLN-ERR-004).
		{"INVALID_ARGUMENT flagged retryable", codes.InvalidArgument, mk(CodeInvalidArgument, true), CodeInvalidArgument, false},
		{"unknown code uses the flag", codes.Internal, mk(Code(99), true), Code(99), true},
		{"UNSPECIFIED reads as INTERNAL", codes.Internal, mk(0, false), CodeInternal, true},
		{"bare UNAVAILABLE", codes.Unavailable, nil, 0, true},
		{"bare DEADLINE_EXCEEDED", codes.DeadlineExceeded, nil, 0, true},
		{"bare ABORTED", codes.Aborted, nil, 0, true},
		{"bare RESOURCE_EXHAUSTED", codes.ResourceExhausted, nil, 0, false},
		{"unparseable trailer is bare", codes.Unavailable, map[string][]string{errorTrailer: {"\xff\xff"}}, 0, true},
	}
	for _, c := range cases {
		e := fromRPC(status.Error(c.st, "m"), c.trailer)
		if e.Retryable != c.retryable || (c.trailer != nil && e.Typed && e.Code != c.code) {
			t.Errorf("%s: got code %v retryable %v", c.name, e.Code, e.Retryable)
		}
		if c.code == 0 && e.Typed {
			t.Errorf("%s: a bare status became typed", c.name)
		}
	}
}

func TestPeerCancellationIsALostConnection(t *testing.T) {
	// A server that stops with a call in flight surfaces in grpc-go as a bare CANCELLED.
	if e := peerCancel(fromRPC(status.Error(codes.Canceled, "x"), nil), context.Background()); !e.Retryable {
		t.Error("a CANCELLED the client did not cause was not retryable")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if e := peerCancel(fromRPC(status.Error(codes.Canceled, "x"), nil), ctx); e.Retryable {
		t.Error("the client's own cancellation became retryable")
	}
}

func TestRetryableHandshakeFailuresAreRetriedWithBackoff(t *testing.T) {
	f := newFake()
	f.onHandshake = func(n int, r *pb.HandshakeRequest) error {
		switch n {
		case 1:
			return status.Error(codes.Unavailable, "bare")
		case 2:
			return typed(context.Background(), codes.Unavailable, CodeUnavailable, 7000)
		}
		return nil
	}
	sl := &sleeps{}
	if err := runBounded(t, &testApp{}, testOptions(f.start(t), sl)); err != nil {
		t.Fatal(err)
	}
	got := sl.all()
	if len(f.handshakes) != 3 || len(got) != 2 {
		t.Fatalf("handshakes %d, waits %v", len(f.handshakes), got)
	}
	if got[0] != 800*time.Millisecond || got[1] != 7*time.Second {
		t.Errorf("waits %v, want 0.8 s then retry_after 7 s", got)
	}
	if len(f.leaves) != 1 || f.leaves[0].GetReason() != pb.LeaveReason_LEAVE_REASON_SHUTDOWN_INSTRUCTION || f.leaves[0].GetSessionId() != "s3" {
		t.Errorf("leaves %v", f.leaves)
	}
}

func TestVersionUnsupportedEndsTheClientWithoutRetry(t *testing.T) {
	f := newFake()
	f.onHandshake = func(n int, r *pb.HandshakeRequest) error {
		return typed(context.Background(), codes.FailedPrecondition, CodeVersionUnsupported, 0)
	}
	err := runBounded(t, &testApp{}, testOptions(f.start(t), &sleeps{}))
	var fe *FatalError
	if !errors.As(err, &fe) || CodeOf(err) != CodeVersionUnsupported {
		t.Fatalf("got %v", err)
	}
	if len(f.handshakes) != 1 {
		t.Errorf("%d handshakes after VERSION_UNSUPPORTED (PLN-HS-010)", len(f.handshakes))
	}
	h := f.handshakes[0]
	if len(h.GetVersions()) != 1 || h.GetVersions()[0].GetMajor() != 1 || h.GetNodeId() != "node-7" ||
		h.GetCapabilities().GetCodecs()[0] != CodecRaw {
		t.Errorf("handshake request %v", h)
	}
}

func TestAVersionWeDidNotOfferIsFatal(t *testing.T) {
	f := newFake()
	f.minor = 1 // we offered 1.0
	err := runBounded(t, &testApp{}, testOptions(f.start(t), &sleeps{}))
	if _, ok := err.(*FatalError); !ok {
		t.Fatalf("got %v", err)
	}
	if len(f.handshakes) != 1 || len(f.polls) != 0 {
		t.Errorf("handshakes %d, polls %d", len(f.handshakes), len(f.polls))
	}
	// PLN-HS-011: Leave with FATAL_ERROR, then stop.
	if len(f.leaves) != 1 || f.leaves[0].GetReason() != pb.LeaveReason_LEAVE_REASON_FATAL_ERROR || f.leaves[0].GetSessionId() != "s1" {
		t.Errorf("leaves %v", f.leaves)
	}
}

func TestNonRetryablePollFailureIsFatalAndLeaves(t *testing.T) {
	f := newFake()
	f.onPoll = func(n int, r *pb.PollTaskRequest) (*pb.Task, error) {
		if n == 1 {
			return nil, nil // an empty answer is followed by the next poll at once
		}
		return nil, status.Error(codes.ResourceExhausted, "bare")
	}
	sl := &sleeps{}
	err := runBounded(t, &testApp{}, testOptions(f.start(t), sl))
	if _, ok := err.(*FatalError); !ok {
		t.Fatalf("got %v", err)
	}
	if len(f.polls) != 2 || len(sl.all()) != 0 {
		t.Errorf("polls %d, waits %v", len(f.polls), sl.all())
	}
	if f.polls[0].GetWaitMs() != 1000 {
		t.Errorf("wait_ms %d, want the server's max_poll_wait_ms", f.polls[0].GetWaitMs())
	}
	if len(f.leaves) != 1 || f.leaves[0].GetReason() != pb.LeaveReason_LEAVE_REASON_FATAL_ERROR {
		t.Errorf("leaves %v", f.leaves)
	}
}

func TestSessionUnknownKeepsTheResultAndNodeID(t *testing.T) {
	f := newFake()
	param := NewFloat32([]int64{2}, []float32{1, 2})
	f.onPoll = func(n int, r *pb.PollTaskRequest) (*pb.Task, error) {
		if n == 1 {
			return fitTask("t1", rawTensor(param)), nil
		}
		return shutdownTask(), nil
	}
	f.onSubmit = func(n int, r *pb.SubmitResultRequest) (*pb.SubmitResultResponse, error) {
		if n == 1 {
			return nil, typed(context.Background(), codes.NotFound, CodeSessionUnknown, 0)
		}
		return &pb.SubmitResultResponse{}, nil
	}
	app := &testApp{}
	if err := runBounded(t, app, testOptions(f.start(t), &sleeps{})); err != nil {
		t.Fatal(err)
	}
	if app.fits.Load() != 1 || len(f.submits) != 2 || len(f.handshakes) != 2 {
		t.Fatalf("fits %d submits %d handshakes %d", app.fits.Load(), len(f.submits), len(f.handshakes))
	}
	if f.handshakes[1].GetNodeId() != "node-7" {
		t.Errorf("second handshake with node id %q", f.handshakes[1].GetNodeId())
	}
	if f.submits[1].GetSessionId() != "s2" || !proto.Equal(f.submits[0].GetResult(), f.submits[1].GetResult()) {
		t.Errorf("the result was not resubmitted unchanged in the new session")
	}
	got := f.submits[1].GetResult().GetFit().GetParameters()[0]
	if !bytes.Equal(got.GetInlineData(), param.Data) || got.GetDtype() != Float32 {
		t.Errorf("submitted tensor %v", got)
	}
}

func TestRedeliveredTaskIsAnsweredWithoutRunningAgain(t *testing.T) {
	f := newFake()
	param := NewFloat64([]int64{1}, []float64{4})
	f.onPoll = func(n int, r *pb.PollTaskRequest) (*pb.Task, error) {
		if n <= 2 {
			return fitTask("t1", rawTensor(param)), nil
		}
		return shutdownTask(), nil
	}
	app := &testApp{}
	if err := runBounded(t, app, testOptions(f.start(t), &sleeps{})); err != nil {
		t.Fatal(err)
	}
	if app.fits.Load() != 1 || len(f.submits) != 2 || !proto.Equal(f.submits[0], f.submits[1]) {
		t.Errorf("fits %d, submits %d (PLN-TSK-015)", app.fits.Load(), len(f.submits))
	}
}

func TestFailuresAreReportedAsTaskResults(t *testing.T) {
	cases := []struct {
		name  string
		app   *testApp
		task  *pb.Task
		code  Code
		field string
	}{
		{"panic", &testApp{fit: func(context.Context, []*Tensor, Config) (*FitResult, error) { panic("boom") }},
			fitTask("t"), CodeAppError, ""},
		{"unsupported", &testApp{fit: func(context.Context, []*Tensor, Config) (*FitResult, error) { return nil, ErrUnsupported }},
			fitTask("t"), CodeUnsupportedInstruction, ""},
		{"wrong count", &testApp{fit: func(context.Context, []*Tensor, Config) (*FitResult, error) {
			return &FitResult{NumExamples: 1}, nil
		}}, fitTask("t", rawTensor(NewFloat32([]int64{1}, []float32{1}))), CodeAppError, ""},
		{"bad tensor", &testApp{}, fitTask("t", rawTensor(NewFloat32([]int64{1}, []float32{1})),
			&pb.Tensor{Dtype: Float32, Shape: []int64{2}, Payload: &pb.Tensor_InlineData{InlineData: []byte{1}}}),
			CodeTensorSizeMismatch, "fit.parameters[1]"},
		{"no instruction", &testApp{}, &pb.Task{TaskId: "t"}, CodeUnsupportedInstruction, "instruction"},
		{"bad config", &testApp{}, &pb.Task{TaskId: "t", Instruction: &pb.Task_Fit{Fit: &pb.FitInstruction{
			Config: map[string]*pb.Value{"k": {}}}}}, CodeInvalidArgument, `fit.config["k"]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFake()
			f.onPoll = func(n int, r *pb.PollTaskRequest) (*pb.Task, error) {
				if n == 1 {
					return c.task, nil
				}
				return shutdownTask(), nil
			}
			if err := runBounded(t, c.app, testOptions(f.start(t), &sleeps{})); err != nil {
				t.Fatal(err)
			}
			if len(f.submits) != 1 {
				t.Fatalf("%d submits", len(f.submits))
			}
			fail := f.submits[0].GetResult().GetFailure()
			if fail.GetCode() != c.code || fail.GetField() != c.field {
				t.Errorf("failure %v, want %v at %q", fail, CodeName(c.code), c.field)
			}
		})
	}
}

func TestHeartbeatsDuringWorkAndAbandonWhenInactive(t *testing.T) {
	f := newFake()
	f.hbEvery = 200 * time.Millisecond
	f.onPoll = func(n int, r *pb.PollTaskRequest) (*pb.Task, error) {
		if n == 1 {
			return fitTask("slow"), nil
		}
		return shutdownTask(), nil
	}
	f.onHeartbeat = func(n int, r *pb.HeartbeatRequest) (bool, error) {
		switch n {
		case 1:
			return false, status.Error(codes.Unavailable, "a failed heartbeat never stops work")
		case 2:
			return true, nil
		}
		return false, nil // the server no longer wants the task
	}
	cancelled := make(chan struct{})
	app := &testApp{fit: func(ctx context.Context, _ []*Tensor, _ Config) (*FitResult, error) {
		<-ctx.Done() // work that only ends when the SDK abandons it
		close(cancelled)
		return nil, ctx.Err()
	}}
	if err := runBounded(t, app, testOptions(f.start(t), &sleeps{})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the application's context was not cancelled")
	}
	// Three at least: a heartbeat that outlives its deadline on a loaded machine is retried
	// at the next tick, which the abandonment must survive too.
	if len(f.heartbeats) < 3 || f.heartbeats[0].GetTaskId() != "slow" {
		t.Errorf("heartbeats %v", f.heartbeats)
	}
	if len(f.submits) != 0 {
		t.Errorf("an abandoned task was submitted")
	}
}

func TestReconnectInstructionLeavesWaitsAndReturns(t *testing.T) {
	f := newFake()
	f.onPoll = func(n int, r *pb.PollTaskRequest) (*pb.Task, error) {
		if n == 1 {
			return &pb.Task{TaskId: "rc", Instruction: &pb.Task_Reconnect{Reconnect: &pb.ReconnectInstruction{DelayMs: 60000}}}, nil
		}
		return shutdownTask(), nil
	}
	sl := &sleeps{}
	if err := runBounded(t, &testApp{}, testOptions(f.start(t), sl)); err != nil {
		t.Fatal(err)
	}
	if len(f.leaves) != 2 || f.leaves[0].GetReason() != pb.LeaveReason_LEAVE_REASON_RECONNECT_INSTRUCTION || f.leaves[0].GetSessionId() != "s1" {
		t.Fatalf("leaves %v", f.leaves)
	}
	if w := sl.all(); len(w) != 1 || w[0] < 59*time.Second || w[0] > 60*time.Second {
		t.Errorf("waits %v, want the 60 s delay", w)
	}
	if len(f.handshakes) != 2 || f.handshakes[1].GetNodeId() != "node-7" || len(f.submits) != 0 {
		t.Errorf("handshakes %d, submits %d", len(f.handshakes), len(f.submits))
	}
}

func TestLargeResultsTravelAsUploadedBlobs(t *testing.T) {
	f := newFake()
	f.limits = &pb.Limits{MaxMessageBytes: 65536}
	f.chunk = 16384
	big := NewFloat32([]int64{20000}, make([]float32, 20000))
	small := NewFloat32([]int64{1}, []float32{5})
	for i := range big.Data {
		big.Data[i] = byte(i * 7)
	}
	f.onPoll = func(n int, r *pb.PollTaskRequest) (*pb.Task, error) {
		if n == 1 {
			return fitTask("t", rawTensor(big), rawTensor(small)), nil
		}
		return shutdownTask(), nil
	}
	f.onSubmit = func(n int, r *pb.SubmitResultRequest) (*pb.SubmitResultResponse, error) {
		if n == 1 { // as if the server lost the blob: upload again, then submit again
			delete(f.blobs, string(r.GetResult().GetFit().GetParameters()[0].GetBlob().GetSha256()))
			return nil, typed(context.Background(), codes.NotFound, CodeBlobNotFound, 0)
		}
		return &pb.SubmitResultResponse{}, nil
	}
	if err := runBounded(t, &testApp{}, testOptions(f.start(t), &sleeps{})); err != nil {
		t.Fatal(err)
	}
	if len(f.submits) != 2 {
		t.Fatalf("%d submits", len(f.submits))
	}
	ps := f.submits[1].GetResult().GetFit().GetParameters()
	want := sha256.Sum256(big.Data)
	if ref := ps[0].GetBlob(); ref == nil || !bytes.Equal(ref.GetSha256(), want[:]) || ref.GetSize() != 80000 {
		t.Fatalf("large tensor not sent as a blob: %v", ps[0])
	}
	if !bytes.Equal(ps[1].GetInlineData(), small.Data) {
		t.Errorf("the small tensor should stay inline")
	}
	if n := proto.Size(f.submits[1]); n > 65536 {
		t.Errorf("SubmitResult of %d bytes exceeds the server's limit", n)
	}
	// Each upload starts with a status query, then chunks at the committed size.
	var offsets []uint64
	for _, u := range f.uploads {
		if len(u.GetData()) > 16384 {
			t.Errorf("chunk of %d bytes", len(u.GetData()))
		}
		offsets = append(offsets, u.GetOffset())
	}
	wantOffsets := []uint64{0, 0, 16384, 32768, 49152, 65536, 0, 0, 16384, 32768, 49152, 65536}
	if len(offsets) != len(wantOffsets) {
		t.Fatalf("upload offsets %v", offsets)
	}
	for i := range offsets {
		if offsets[i] != wantOffsets[i] || (i%6 == 0) != (len(f.uploads[i].GetData()) == 0) {
			t.Fatalf("upload offsets %v", offsets)
		}
	}
}

func TestDownloadsResumeAndVerify(t *testing.T) {
	f := newFake()
	param := NewFloat64([]int64{3000}, make([]float64, 3000))
	for i := range param.Data {
		param.Data[i] = byte(i)
	}
	sum := sha256.Sum256(param.Data)
	size := uint64(len(param.Data))
	f.onDownload = func(n int, r *pb.DownloadBlobRequest, send func(uint64, []byte, uint64) error) error {
		data := param.Data
		if n == 1 {
			data = append([]byte{}, data...)
			data[5] ^= 1 // corrupt bytes: the digest check must catch them
		}
		off := r.GetOffset()
		for off < size {
			end := min(off+f.chunk, size)
			if err := send(off, data[off:end], size); err != nil {
				return err
			}
			off = end
			if n == 2 && off >= f.chunk {
				return status.Error(codes.Unavailable, "stream cut") // resume from here
			}
		}
		return nil
	}
	f.chunk = 10000
	f.onPoll = func(n int, r *pb.PollTaskRequest) (*pb.Task, error) {
		if n == 1 {
			return fitTask("t", &pb.Tensor{Dtype: Float64, Shape: []int64{3000},
				Payload: &pb.Tensor_Blob{Blob: &pb.BlobRef{Sha256: sum[:], Size: size}}}), nil
		}
		return shutdownTask(), nil
	}
	var got []byte
	app := &testApp{fit: func(_ context.Context, ps []*Tensor, _ Config) (*FitResult, error) {
		got = ps[0].Data
		return &FitResult{Parameters: ps, NumExamples: 1}, nil
	}}
	if err := runBounded(t, app, testOptions(f.start(t), &sleeps{})); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, param.Data) {
		t.Fatal("the application did not get the blob's bytes")
	}
	var offs []uint64
	for _, d := range f.downloads {
		offs = append(offs, d.GetOffset())
	}
	// A digest mismatch restarts from 0 (PLN-BLB-015); a cut stream resumes (PLN-BLB-013).
	if len(offs) != 3 || offs[0] != 0 || offs[1] != 0 || offs[2] != 10000 {
		t.Errorf("download offsets %v", offs)
	}
}

func TestStopLeavesWithClientStopping(t *testing.T) {
	f := newFake()
	ctx, cancel := context.WithCancel(context.Background())
	f.onPoll = func(n int, r *pb.PollTaskRequest) (*pb.Task, error) {
		cancel() // SIGTERM arrives during a long poll
		return nil, nil
	}
	opts := testOptions(f.start(t), &sleeps{})
	done := make(chan error, 1)
	go func() { done <- Run(ctx, &testApp{}, opts) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop")
	}
	if len(f.leaves) != 1 || f.leaves[0].GetReason() != pb.LeaveReason_LEAVE_REASON_CLIENT_STOPPING {
		t.Errorf("leaves %v", f.leaves)
	}
}

func TestHeartbeatsCountFromTheStartOfTheHeldPoll(t *testing.T) {
	f := newFake()
	f.hbEvery = time.Second
	f.onPoll = func(n int, r *pb.PollTaskRequest) (*pb.Task, error) {
		if n == 1 {
			// The server holds the poll most of an interval before it hands out the task.
			time.Sleep(800 * time.Millisecond)
			return fitTask("held"), nil
		}
		return shutdownTask(), nil
	}
	third := make(chan struct{})
	f.onHeartbeat = func(n int, r *pb.HeartbeatRequest) (bool, error) {
		if n == 3 {
			close(third)
		}
		return true, nil
	}
	app := &testApp{fit: func(ctx context.Context, ps []*Tensor, _ Config) (*FitResult, error) {
		select {
		case <-third:
		case <-ctx.Done():
		}
		return &FitResult{Parameters: ps, NumExamples: 1}, nil
	}}
	if err := runBounded(t, app, testOptions(f.start(t), &sleeps{})); err != nil {
		t.Fatal(err)
	}
	if len(f.hbStarts) < 3 || len(f.submits) != 1 {
		t.Fatalf("heartbeats %d, submits %d", len(f.hbStarts), len(f.submits))
	}
	// PLN-SES-007: a request starts at least every interval, counted from the start of the
	// previous one; the PollTask that delivered the task is the first of them.
	starts := append([]time.Time{f.pollStarts[0]}, f.hbStarts...)
	for i := 1; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap > f.hbEvery {
			t.Errorf("request %d started %v after the previous one, more than the %v interval", i, gap, f.hbEvery)
		}
	}
	// PLN-SES-024: each heartbeat's deadline is at most half the interval.
	for i, d := range f.hbDeadlines {
		if d <= 0 || d > f.hbEvery/2 {
			t.Errorf("heartbeat %d had %v left to its deadline, want at most %v", i+1, d, f.hbEvery/2)
		}
	}
}

// corruptUploads makes the fake server refuse the chunk that completes a blob as
// BLOB_DIGEST_MISMATCH, discarding the blob's bytes, the first times times.
func corruptUploads(f *fakeServer, times int) {
	f.onUpload = func(n int, r *pb.UploadBlobRequest) error {
		if times > 0 && len(r.GetData()) > 0 && r.GetOffset()+uint64(len(r.GetData())) == r.GetTotalSize() {
			times--
			delete(f.blobs, string(r.GetSha256()))
			return typed(context.Background(), codes.DataLoss, CodeBlobDigestMismatch, 0)
		}
		return nil
	}
}

// uploadRestarts counts the uploads that start a blob again at offset 0 with bytes (the
// status queries carry none).
func uploadRestarts(f *fakeServer) int {
	n := 0
	for _, u := range f.uploads {
		if u.GetOffset() == 0 && len(u.GetData()) > 0 {
			n++
		}
	}
	return n - 1
}

func largeFitTask() (*pb.Task, *Tensor) {
	big := NewFloat32([]int64{20000}, make([]float32, 20000))
	for i := range big.Data {
		big.Data[i] = byte(i * 7)
	}
	return fitTask("t", rawTensor(big), rawTensor(NewFloat32([]int64{1}, []float32{5}))), big
}

func TestUploadRestartsSpentReportBlobDigestMismatch(t *testing.T) {
	f := newFake()
	f.limits = &pb.Limits{MaxMessageBytes: 65536}
	f.chunk = 16384
	corruptUploads(f, 1000)
	task, _ := largeFitTask()
	f.onPoll = func(n int, r *pb.PollTaskRequest) (*pb.Task, error) {
		if n == 1 {
			return task, nil
		}
		return shutdownTask(), nil
	}
	if err := runBounded(t, &testApp{}, testOptions(f.start(t), &sleeps{})); err != nil {
		t.Fatal(err)
	}
	if got := uploadRestarts(f); got != blobAttempts {
		t.Errorf("%d restarts from offset 0, want %d", got, blobAttempts)
	}
	// PLN-BLB-024: after the last restart the mismatch is the task's failure, not a dropped
	// result.
	if len(f.submits) != 1 {
		t.Fatalf("%d submits, want the task's failure", len(f.submits))
	}
	res := f.submits[0].GetResult()
	fail := res.GetFailure()
	if res.GetTaskId() != "t" || fail.GetCode() != CodeBlobDigestMismatch || fail.GetField() != "fit.parameters[0]" {
		t.Errorf("result %v, want BLOB_DIGEST_MISMATCH at fit.parameters[0]", res)
	}
}

func TestUploadRestartWaitsForTheBackoff(t *testing.T) {
	f := newFake()
	f.limits = &pb.Limits{MaxMessageBytes: 65536}
	f.chunk = 16384
	corruptUploads(f, 1)
	task, big := largeFitTask()
	f.onPoll = func(n int, r *pb.PollTaskRequest) (*pb.Task, error) {
		if n == 1 {
			return task, nil
		}
		return shutdownTask(), nil
	}
	sl := &sleeps{}
	opts := testOptions(f.start(t), sl)
	opts.rand = func() float64 { return 0.5 } // the jitter factor U(0.8, 1.2) is then 1
	if err := runBounded(t, &testApp{}, opts); err != nil {
		t.Fatal(err)
	}
	if got := uploadRestarts(f); got != 1 {
		t.Fatalf("%d restarts from offset 0, want 1", got)
	}
	// PLN-RTY-007: the restart is a retry, never sooner than 0.8 × base(1), with the jitter.
	if w := sl.all(); len(w) != 1 || w[0] != time.Second {
		t.Errorf("waits %v, want one of base(1) × 1 = 1 s before the restart", w)
	}
	if len(f.submits) != 1 {
		t.Fatalf("%d submits", len(f.submits))
	}
	want := sha256.Sum256(big.Data)
	if ref := f.submits[0].GetResult().GetFit().GetParameters()[0].GetBlob(); !bytes.Equal(ref.GetSha256(), want[:]) {
		t.Errorf("the restarted upload's blob was not submitted: %v", f.submits[0].GetResult())
	}
}
