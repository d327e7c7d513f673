package pollen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"sort"
	"sync/atomic"
	"syscall"
	"time"

	pb "github.com/pollen-fl/pollen/clients/go/gen/pollen/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// The protocol version this SDK speaks (one entry per major, PLN-HS-002).
const (
	ProtocolMajor = 1
	ProtocolMinor = 0
)

const (
	featureQuery = "query"
	// leaveTimeout bounds the best-effort Leave (PLN-SES-019).
	leaveTimeout = 5 * time.Second
	// pollMargin is added to the long-poll wait for the PollTask deadline (PLN-TRN-016).
	pollMargin = 10 * time.Second
	// chunkOverhead is the room the spec leaves for the fields around a blob chunk, reused
	// as the margin under the server's max_message_bytes when sizing a SubmitResult.
	chunkOverhead = 1024
	// downloadTimeout is the deadline of one DownloadBlob stream; a stream cut by it resumes
	// from the bytes already held.
	downloadTimeout = 10 * time.Minute
	blobAttempts    = 3
	answeredKept    = 16
)

// Control-flow outcomes of a call, beyond the typed errors it may return.
var (
	errStopped        = errors.New("pollen: stopped")
	errSessionLost    = errors.New("pollen: session unknown to the server")
	errConnectionLost = errors.New("pollen: connection lost (retry budget spent)")
)

// FatalError ends Run: a non-retryable Handshake failure (VERSION_UNSUPPORTED, UNAUTHENTICATED,
// ...), a non-retryable PollTask failure, or a protocol violation by the server.
type FatalError struct{ Err error }

func (e *FatalError) Error() string { return "pollen: fatal: " + e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

// session holds the terms of an open session, fixed by the handshake response (PLN-HS-026).
type session struct {
	id        string
	heartbeat time.Duration
	maxPoll   time.Duration
	chunk     int
	codecs    map[string]bool
	dtypes    map[DType]bool
	features  map[string]bool
	server    Limits // what the server accepts from us
}

type pendingResult struct {
	result    *pb.TaskResult
	blobs     map[[32]byte][]byte // payloads moved out of the message, by digest
	resubmits int
}

type runner struct {
	opts Options
	app  Client
	conn *grpc.ClientConn
	fed  pb.FederationServiceClient
	blob pb.BlobServiceClient
	// sess is read by the worker goroutine (blob downloads) while the main loop may replace
	// it after SESSION_UNKNOWN.
	sess     atomic.Pointer[session]
	failures int // position in the shared backoff sequence (PLN-RTY-010)
	// closed holds the error of a Handshake that must not be repeated (PLN-HS-010), even
	// when the heartbeats of a task in progress are what met it.
	closed   error
	pending  *pendingResult
	answered map[string]*pendingResult
	order    []string
}

// RunUntilSignal is Run with a context that ends on SIGTERM or SIGINT, which makes the client
// leave its session (reason CLIENT_STOPPING) and return nil.
func RunUntilSignal(app Client, opts Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return Run(ctx, app, opts)
}

// Run connects to a Pollen server and serves app until the server sends a shutdown
// instruction or ctx ends (both return nil), or a fatal error (a *FatalError). Temporary
// failures never end it: calls are retried with backoff, lost sessions are reopened with the
// same node id, and lost connections are dialled again.
func Run(ctx context.Context, app Client, opts Options) error {
	if err := opts.normalize(); err != nil {
		return err
	}
	r := &runner{opts: opts, app: app, answered: map[string]*pendingResult{}}
	if opts.Insecure {
		opts.Logger.Warn("pollen: plaintext connection (insecure): no transport security")
	}
	defer r.closeConn()
	return r.loop(ctx)
}

func (r *runner) loop(ctx context.Context) error {
	for {
		if ctx.Err() != nil {
			r.submitBeforeStop()
			r.leave(pb.LeaveReason_LEAVE_REASON_CLIENT_STOPPING, "")
			return nil
		}
		if r.conn == nil {
			if err := r.dial(); err != nil {
				return &FatalError{err}
			}
		}
		var err error
		switch {
		case r.closed != nil:
			// Leave is sent only when a session exists (PLN-HS-011); after a refused
			// Handshake there is none.
			r.leave(pb.LeaveReason_LEAVE_REASON_FATAL_ERROR, truncate(r.closed.Error(), 1024))
			return r.closed
		case r.sess.Load() == nil:
			if err = r.handshake(ctx); r.closed != nil {
				continue
			}
		case r.pending != nil:
			err = r.submit(ctx)
		default:
			var done bool
			done, err = r.pollAndServe(ctx)
			if done {
				return nil
			}
			var pe *Error
			if errors.As(err, &pe) {
				// Any other non-retryable PollTask failure is fatal (chapter 12).
				r.leave(pb.LeaveReason_LEAVE_REASON_FATAL_ERROR, truncate(pe.Error(), 1024))
				return &FatalError{err}
			}
		}
		if err := r.recover(ctx, err); err != nil {
			r.leave(pb.LeaveReason_LEAVE_REASON_FATAL_ERROR, truncate(err.Error(), 1024))
			return err
		}
	}
}

// recover handles the outcomes every state shares; it returns only fatal errors.
func (r *runner) recover(ctx context.Context, err error) error {
	var fe *FatalError
	switch {
	case err == nil, errors.Is(err, errStopped):
	case errors.Is(err, errSessionLost):
		r.opts.Logger.Info("pollen: session lost; handshaking again")
		r.sess.Store(nil) // PLN-SES-013; a pending result is kept (PLN-SES-014)
	case errors.Is(err, errConnectionLost):
		r.opts.Logger.Warn("pollen: connection lost; reconnecting", "err", err)
		r.sess.Store(nil)
		r.closeConn()
		r.failures++
		r.opts.sleep(ctx, r.opts.Backoff.delay(r.failures, 0, r.opts.rand))
	case errors.As(err, &fe):
		return err
	default:
		// A typed error of a call whose state decided to go on (a dropped result).
		r.opts.Logger.Warn("pollen: call failed", "err", err)
	}
	return nil
}

func (r *runner) dial() error {
	var creds credentials.TransportCredentials
	if r.opts.Insecure {
		creds = insecure.NewCredentials()
	} else {
		cfg := r.opts.TLS
		if cfg == nil {
			cfg = &tls12
		}
		cfg = cfg.Clone()
		if cfg.MinVersion < tls12.MinVersion {
			cfg.MinVersion = tls12.MinVersion // PLN-SEC-003
		}
		creds = credentials.NewTLS(cfg) // never falls back to plaintext (PLN-SEC-002)
	}
	recv := int(min(r.opts.Limits.MaxMessageBytes, math.MaxInt32))
	conn, err := grpc.NewClient(r.opts.Server, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(recv)))
	if err != nil {
		return err
	}
	r.conn, r.fed, r.blob = conn, pb.NewFederationServiceClient(conn), pb.NewBlobServiceClient(conn)
	return nil
}

func (r *runner) closeConn() {
	if r.conn != nil {
		_ = r.conn.Close()
		r.conn = nil
	}
}

// unary runs one call with a deadline (PLN-TRN-014) and turns its failure into an *Error
// read from the pollen-error-bin trailer when present.
func unary(ctx context.Context, timeout time.Duration, call func(context.Context, ...grpc.CallOption) error) error {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var md metadata.MD
	if err := call(cctx, grpc.Trailer(&md)); err != nil {
		return peerCancel(fromRPC(err, md), cctx)
	}
	return nil
}

// peerCancel marks a bare CANCELLED that this client did not cause as retryable
// (PLN-RTY-013): grpc-go reports a server that stops with calls in flight (RST_STREAM
// CANCEL) as CANCELLED. The client tells its own cancellations apart by its context, and
// those are neither retried nor reported.
func peerCancel(e *Error, ctx context.Context) *Error {
	if !e.Typed && e.Status == codes.Canceled && ctx.Err() == nil {
		e.Retryable = true
	}
	return e
}

// retry repeats call after retryable failures with the shared backoff; SESSION_UNKNOWN,
// non-retryable errors, a spent budget and a stop end it.
func (r *runner) retry(ctx context.Context, what string, call func() error) error {
	for attempt := 1; ; attempt++ {
		err := call()
		if err == nil {
			r.failures = 0 // a success restarts the sequence (PLN-RTY-010)
			return nil
		}
		if ctx.Err() != nil {
			return errStopped
		}
		var pe *Error
		if !errors.As(err, &pe) {
			return err
		}
		if pe.sessionUnknown() {
			return fmt.Errorf("%s: %w", what, errSessionLost)
		}
		if !pe.Retryable {
			return err
		}
		if attempt >= r.opts.Backoff.AttemptsPerCall {
			return fmt.Errorf("%s: %v: %w", what, pe, errConnectionLost)
		}
		r.failures++
		d := r.opts.Backoff.delay(r.failures, pe.RetryAfter, r.opts.rand)
		r.opts.Logger.Info("pollen: retrying", "call", what, "err", pe, "in", d)
		if !r.opts.sleep(ctx, d) {
			return errStopped
		}
	}
}

func (r *runner) handshake(ctx context.Context) error {
	err := r.handshakeOnce(ctx)
	var pe *Error
	var fe *FatalError
	if errors.As(err, &pe) || errors.Is(err, errSessionLost) {
		// A Handshake that fails without retry ends the client (state closed).
		r.closed = &FatalError{err}
	} else if errors.As(err, &fe) {
		r.closed = err
	}
	return err
}

func (r *runner) handshakeOnce(ctx context.Context) error {
	dtypes := make([]pb.Dtype, len(r.opts.DTypes))
	copy(dtypes, r.opts.DTypes)
	var features []string
	if _, ok := r.app.(Querier); ok {
		features = []string{featureQuery}
	}
	agent := sdkAgent
	if r.opts.Agent != "" {
		agent = r.opts.Agent + " " + sdkAgent
	}
	req := &pb.HandshakeRequest{
		Versions: []*pb.ProtocolVersion{{Major: ProtocolMajor, Minor: ProtocolMinor}},
		NodeId:   r.opts.NodeID,
		Capabilities: &pb.Capabilities{Codecs: r.opts.Codecs, Dtypes: dtypes,
			Limits: r.opts.Limits.toProto(), Features: features},
		Agent: agent,
	}
	var resp *pb.HandshakeResponse
	err := r.retry(ctx, "Handshake", func() error {
		return unary(ctx, r.opts.CallTimeout, func(c context.Context, o ...grpc.CallOption) (err error) {
			resp, err = r.fed.Handshake(c, req, o...)
			return err
		})
	})
	var pe *Error
	if errors.As(err, &pe) && pe.Code == CodeVersionUnsupported {
		// PLN-HS-010: no second Handshake with the same versions; report what the server has.
		return fmt.Errorf("server speaks none of our versions (we offer %d.%d, it supports %v): %w",
			ProtocolMajor, ProtocolMinor, pe.SupportedVersions, err)
	}
	if err != nil {
		return err
	}
	s, verr := r.sessionFrom(resp)
	if verr != nil {
		// PLN-HS-011: an answer we cannot have asked for is fatal.
		r.sess.Store(&session{id: resp.GetSessionId()})
		return &FatalError{verr}
	}
	r.sess.Store(s)
	r.opts.Logger.Info("pollen: session open", "node", r.opts.NodeID,
		"version", fmt.Sprintf("%d.%d", resp.GetVersion().GetMajor(), resp.GetVersion().GetMinor()),
		"server", resp.GetAgent())
	return nil
}

func (r *runner) sessionFrom(resp *pb.HandshakeResponse) (*session, error) {
	v := resp.GetVersion()
	if v.GetMajor() != ProtocolMajor || v.GetMinor() > ProtocolMinor {
		return nil, fmt.Errorf("server selected version %d.%d, which we did not offer", v.GetMajor(), v.GetMinor())
	}
	if resp.GetSessionId() == "" || resp.GetHeartbeatIntervalMs() == 0 || resp.GetMaxPollWaitMs() == 0 ||
		resp.GetChunkSizeBytes() == 0 || resp.GetSessionTimeoutMs() == 0 {
		return nil, errors.New("handshake response lacks a session id or a session parameter (PLN-HS-022)")
	}
	caps := resp.GetCapabilities()
	s := &session{
		id:        resp.GetSessionId(),
		heartbeat: time.Duration(resp.GetHeartbeatIntervalMs()) * time.Millisecond,
		maxPoll:   time.Duration(resp.GetMaxPollWaitMs()) * time.Millisecond,
		chunk:     int(min(resp.GetChunkSizeBytes(), 1<<30)),
		codecs:    map[string]bool{},
		dtypes:    map[DType]bool{},
		features:  map[string]bool{},
		server:    limitsFromProto(caps.GetLimits()),
	}
	// Only what both sides offered counts, whatever else the response lists.
	for _, c := range caps.GetCodecs() {
		for _, ours := range r.opts.Codecs {
			if c == ours {
				s.codecs[c] = true
			}
		}
	}
	for _, d := range caps.GetDtypes() {
		for _, ours := range r.opts.DTypes {
			if d == ours {
				s.dtypes[d] = true
			}
		}
	}
	for _, f := range caps.GetFeatures() {
		s.features[f] = true
	}
	s.codecs[CodecRaw] = true
	return s, nil
}

// leave ends the session, best effort: once, with a short deadline, whatever the outcome
// (PLN-SES-019); the session id is never used again (PLN-SES-020).
func (r *runner) leave(reason pb.LeaveReason, msg string) {
	s := r.sess.Swap(nil)
	if s == nil || r.fed == nil {
		return
	}
	err := unary(context.Background(), leaveTimeout, func(c context.Context, o ...grpc.CallOption) error {
		_, err := r.fed.Leave(c, &pb.LeaveRequest{SessionId: s.id, Reason: reason, Message: msg}, o...)
		return err
	})
	r.opts.Logger.Info("pollen: left session", "reason", reason.String(), "err", err)
}

// pollAndServe long-polls once and handles what comes back; done means a shutdown.
func (r *runner) pollAndServe(ctx context.Context) (done bool, err error) {
	s := r.sess.Load()
	var resp *pb.PollTaskResponse
	var started time.Time // the start of the attempt that answered, the last request sent
	err = r.retry(ctx, "PollTask", func() error {
		started = time.Now()
		// wait_ms is the server's max (PLN-TSK-009) and the deadline exceeds it (PLN-TRN-015).
		return unary(ctx, s.maxPoll+pollMargin, func(c context.Context, o ...grpc.CallOption) (err error) {
			resp, err = r.fed.PollTask(c, &pb.PollTaskRequest{SessionId: s.id, WaitMs: uint64(s.maxPoll.Milliseconds())}, o...)
			return err
		})
	})
	received := time.Now() // the task's deadline counts from here (PLN-TSK-017)
	if err != nil || resp.GetTask() == nil {
		return false, err
	}
	task := resp.GetTask()
	switch ins := task.GetInstruction().(type) {
	case *pb.Task_Reconnect:
		r.leave(pb.LeaveReason_LEAVE_REASON_RECONNECT_INSTRUCTION, "")
		r.closeConn()
		// Not before delay_ms after receipt (PLN-CTL-002), and with a fresh backoff (PLN-CTL-004).
		wait := time.Until(received.Add(time.Duration(ins.Reconnect.GetDelayMs()) * time.Millisecond))
		r.failures = 0
		if wait > 0 && !r.opts.sleep(ctx, wait) {
			return false, errStopped
		}
		return false, nil
	case *pb.Task_Shutdown:
		r.opts.Logger.Info("pollen: shutdown instruction", "reason", ins.Shutdown.GetReason())
		r.leave(pb.LeaveReason_LEAVE_REASON_SHUTDOWN_INSTRUCTION, "")
		return true, nil
	}
	if p, ok := r.answered[task.GetTaskId()]; ok {
		// Delivered again after we answered it: send the same result, never rerun (PLN-TSK-015).
		r.pending = p
		return false, nil
	}
	r.pending = r.work(ctx, task, received, started)
	return false, nil
}

// work runs a task's instruction on a worker goroutine while this one sends heartbeats. It
// returns the result to submit, or nil when the task was abandoned. lastRequest is the start
// of the last request sent to the server, the PollTask that delivered the task: a poll held
// for up to max_poll_wait_ms already counts against the heartbeat interval (PLN-SES-007).
func (r *runner) work(ctx context.Context, task *pb.Task, received, lastRequest time.Time) *pendingResult {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var deadline <-chan time.Time
	if ms := task.GetDeadlineMs(); ms > 0 {
		t := time.NewTimer(time.Until(received.Add(time.Duration(ms) * time.Millisecond)))
		defer t.Stop()
		deadline = t.C
	}
	done := make(chan *pb.TaskResult, 1)
	go func() { done <- r.execute(wctx, task) }()
	for {
		// A heartbeat every half interval, counted from the start of the previous request,
		// with a deadline of half an interval (PLN-SES-024), keeps a request starting at least
		// once every interval (PLN-SES-007). One already due goes at once.
		hb := time.NewTimer(max(time.Until(lastRequest.Add(r.heartbeatEvery())), 0))
		select {
		case res := <-done:
			hb.Stop()
			return &pendingResult{result: res}
		case <-deadline:
			hb.Stop()
			r.opts.Logger.Warn("pollen: task deadline passed; abandoning it", "task", task.GetTaskId())
			return nil // PLN-TSK-018
		case <-ctx.Done():
			hb.Stop()
			return nil
		case <-hb.C:
			lastRequest = time.Now()
			if !r.heartbeat(ctx, task.GetTaskId()) {
				r.opts.Logger.Info("pollen: server no longer wants the task; abandoning it", "task", task.GetTaskId())
				return nil // PLN-SES-011
			}
		}
	}
}

func (r *runner) heartbeatEvery() time.Duration {
	if s := r.sess.Load(); s != nil {
		return s.heartbeat / 2
	}
	return time.Second
}

// heartbeat sends one Heartbeat and reports whether the task is still wanted. Failures never
// stop the work (PLN-SES-012): retryable ones wait for the next tick, SESSION_UNKNOWN
// reopens the session.
func (r *runner) heartbeat(ctx context.Context, taskID string) bool {
	s := r.sess.Load()
	if r.closed != nil {
		return false // the client is closing: the work is abandoned and the loop returns
	}
	if s == nil {
		if r.handshake(ctx) != nil {
			return r.closed == nil
		}
		s = r.sess.Load()
	}
	var resp *pb.HeartbeatResponse
	// Half an interval of deadline plus half an interval of pause keeps the starts of two
	// heartbeats at most one interval apart.
	err := unary(ctx, min(r.opts.CallTimeout, s.heartbeat/2), func(c context.Context, o ...grpc.CallOption) (err error) {
		resp, err = r.fed.Heartbeat(c, &pb.HeartbeatRequest{SessionId: s.id, TaskId: taskID}, o...)
		return err
	})
	var pe *Error
	switch {
	case err == nil:
		return resp.GetTaskActive()
	case errors.As(err, &pe) && pe.sessionUnknown():
		r.sess.Store(nil)
		if herr := r.handshake(ctx); herr != nil {
			r.opts.Logger.Warn("pollen: handshake during work failed", "err", herr)
			return r.closed == nil
		}
	default:
		r.opts.Logger.Info("pollen: heartbeat failed", "err", err)
	}
	return true
}

// submit uploads the blobs of the pending result, then submits it.
func (r *runner) submit(ctx context.Context) error {
	p, s := r.pending, r.sess.Load()
	req := &pb.SubmitResultRequest{SessionId: s.id, Result: p.result}
	if p.blobs == nil {
		p.blobs = moveToBlobs(req, s.server.MaxMessageBytes)
	}
	digests := make([][32]byte, 0, len(p.blobs))
	for d := range p.blobs {
		digests = append(digests, d)
	}
	sort.Slice(digests, func(i, j int) bool { return string(digests[i][:]) < string(digests[j][:]) })
	for _, d := range digests {
		if err := r.upload(ctx, s, d, p.blobs[d]); err != nil {
			var pe *Error
			if errors.As(err, &pe) && pe.Typed && pe.Code == CodeBlobDigestMismatch {
				// The restarts are spent: the mismatch is the task's failure (PLN-BLB-024),
				// submitted in place of the result and naming the tensor that could not be sent.
				fail := NewError(CodeBlobDigestMismatch, blobField(p.result, d),
					"upload refused after %d restarts from offset 0: %s", blobAttempts, pe.Message)
				r.opts.Logger.Warn("pollen: blob upload failed; reporting the task's failure",
					"task", p.result.GetTaskId(), "err", fail)
				p.result = &pb.TaskResult{TaskId: p.result.GetTaskId(),
					Outcome: &pb.TaskResult_Failure{Failure: toProto(fail)}}
				p.blobs = map[[32]byte][]byte{} // nothing left to upload
				return nil                      // submitted on the next turn of the loop
			}
			if errors.As(err, &pe) {
				// The result cannot reach the server; it is dropped (PLN-TSK-033).
				r.opts.Logger.Warn("pollen: blob upload failed; dropping the result", "err", err)
				r.pending = nil
				return nil
			}
			return err
		}
	}
	var resp *pb.SubmitResultResponse
	err := r.retry(ctx, "SubmitResult", func() error {
		return unary(ctx, r.opts.CallTimeout, func(c context.Context, o ...grpc.CallOption) (err error) {
			resp, err = r.fed.SubmitResult(c, req, o...)
			return err
		})
	})
	var pe *Error
	switch {
	case err == nil:
		r.opts.Logger.Info("pollen: result accepted", "task", p.result.GetTaskId(), "duplicate", resp.GetDuplicate())
		r.remember(p)
		r.pending = nil
		return nil
	case errors.As(err, &pe) && (pe.Code == CodeBlobNotFound || pe.Code == CodeBlobIncomplete) && p.resubmits < blobAttempts:
		p.resubmits++ // upload again, then submit again (PLN-TSK-033)
		return nil
	case errors.As(err, &pe):
		// Non-retryable: drop the result and go on polling (PLN-TSK-032).
		r.opts.Logger.Warn("pollen: result refused; dropping it", "task", p.result.GetTaskId(), "err", pe)
		r.pending = nil
		return nil
	}
	return err
}

// blobField names the result tensor that travels as the blob with digest d, e.g.
// "fit.parameters[0]", with the paths encodeTensors gives.
func blobField(res *pb.TaskResult, d [32]byte) string {
	prefix := ""
	switch res.GetOutcome().(type) {
	case *pb.TaskResult_Fit:
		prefix = "fit.parameters"
	case *pb.TaskResult_Query:
		prefix = "query.tensors"
	case *pb.TaskResult_GetParameters:
		prefix = "get_parameters.parameters"
	}
	for i, t := range resultTensors(res) {
		if ref := t.GetBlob(); ref != nil && string(ref.GetSha256()) == string(d[:]) {
			return fmt.Sprintf("%s[%d]", prefix, i)
		}
	}
	return prefix
}

// submitBeforeStop makes one quick attempt to deliver a held result before the client stops
// (PLN-SES-017); a result that needs blob uploads, or a failed attempt, is given up.
func (r *runner) submitBeforeStop() {
	p, s := r.pending, r.sess.Load()
	if p == nil || s == nil || r.fed == nil || len(p.blobs) > 0 {
		return
	}
	req := &pb.SubmitResultRequest{SessionId: s.id, Result: p.result}
	if p.blobs == nil && len(moveToBlobs(proto.Clone(req).(*pb.SubmitResultRequest), s.server.MaxMessageBytes)) > 0 {
		return
	}
	err := unary(context.Background(), leaveTimeout, func(c context.Context, o ...grpc.CallOption) error {
		_, err := r.fed.SubmitResult(c, req, o...)
		return err
	})
	r.opts.Logger.Info("pollen: submitted the held result before stopping", "task", p.result.GetTaskId(), "err", err)
	r.pending = nil
}

func (r *runner) remember(p *pendingResult) {
	id := p.result.GetTaskId()
	if _, ok := r.answered[id]; !ok {
		r.order = append(r.order, id)
	}
	r.answered[id] = p
	for len(r.order) > answeredKept {
		delete(r.answered, r.order[0])
		r.order = r.order[1:]
	}
}
