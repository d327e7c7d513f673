package pollen

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sort"
	"time"

	pb "github.com/pollen-fl/pollen/clients/go/gen/pollen/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

var tls12 = tls.Config{MinVersion: tls.VersionTLS12}

// execute decodes a work instruction, runs the application and encodes its reply. It always
// returns a result: problems become the task's failure, never the end of the client.
func (r *runner) execute(ctx context.Context, task *pb.Task) (res *pb.TaskResult) {
	res = &pb.TaskResult{TaskId: task.GetTaskId()}
	defer func() {
		if p := recover(); p != nil {
			r.opts.Logger.Error("pollen: application panicked", "panic", p, "stack", string(debug.Stack()))
			res.Outcome = &pb.TaskResult_Failure{Failure: &pb.Error{Code: CodeAppError,
				Message: truncate(fmt.Sprintf("application panicked: %v", p), 1024)}}
		}
	}()
	outcome, err := r.dispatch(ctx, task)
	if err != nil {
		if errors.Is(err, ErrUnsupported) {
			err = NewError(CodeUnsupportedInstruction, "", "%v", err)
		}
		res.Outcome = &pb.TaskResult_Failure{Failure: toProto(err)}
		r.opts.Logger.Warn("pollen: task failed", "task", task.GetTaskId(), "err", err)
		return res
	}
	switch o := outcome.(type) {
	case *pb.FitResult:
		res.Outcome = &pb.TaskResult_Fit{Fit: o}
	case *pb.EvaluateResult:
		res.Outcome = &pb.TaskResult_Evaluate{Evaluate: o}
	case *pb.QueryResult:
		res.Outcome = &pb.TaskResult_Query{Query: o}
	case *pb.GetParametersResult:
		res.Outcome = &pb.TaskResult_GetParameters{GetParameters: o}
	case *pb.GetPropertiesResult:
		res.Outcome = &pb.TaskResult_GetProperties{GetProperties: o}
	}
	return res
}

func appErr(format string, args ...any) error {
	return NewError(CodeAppError, "", format, args...)
}

func (r *runner) dispatch(ctx context.Context, task *pb.Task) (proto.Message, error) {
	s := r.sess.Load()
	if s == nil {
		return nil, NewError(CodeInternal, "", "no session")
	}
	dec := &Decoder{Limits: r.opts.Limits, DTypes: s.dtypes, Codecs: s.codecs, FetchBlob: r.fetcher(ctx)}
	switch ins := task.GetInstruction().(type) {
	case *pb.Task_Fit:
		params, err := dec.DecodeTensors(ins.Fit.GetParameters(), "fit.parameters")
		if err != nil {
			return nil, err
		}
		cfg, err := decodeMap(ins.Fit.GetConfig(), r.opts.Limits, "fit.config")
		if err != nil {
			return nil, err
		}
		out, err := r.app.Fit(ctx, params, cfg)
		if err != nil {
			return nil, err
		}
		if out == nil {
			return nil, appErr("Fit returned no result")
		}
		// PLN-FIT-001, -003, -004: a malformed update is the application's failure.
		if len(out.Parameters) != len(params) {
			return nil, appErr("Fit returned %d tensors for %d", len(out.Parameters), len(params))
		}
		for i, t := range out.Parameters {
			if t == nil || t.DType != params[i].DType || fmt.Sprint(t.Shape) != fmt.Sprint(params[i].Shape) {
				return nil, appErr("Fit tensor %d does not have the dtype and shape it was given", i)
			}
		}
		if out.NumExamples <= 0 {
			return nil, appErr("Fit reported %d examples; it must be more than 0", out.NumExamples)
		}
		tensors, err := r.encodeTensors(s, out.Parameters, "fit.parameters")
		if err != nil {
			return nil, err
		}
		metrics, err := encodeMap(out.Metrics, s.server, "fit.metrics")
		if err != nil {
			return nil, appErr("%v", err)
		}
		return &pb.FitResult{Parameters: tensors, NumExamples: out.NumExamples, Metrics: metrics}, nil
	case *pb.Task_Evaluate:
		params, err := dec.DecodeTensors(ins.Evaluate.GetParameters(), "evaluate.parameters")
		if err != nil {
			return nil, err
		}
		cfg, err := decodeMap(ins.Evaluate.GetConfig(), r.opts.Limits, "evaluate.config")
		if err != nil {
			return nil, err
		}
		out, err := r.app.Evaluate(ctx, params, cfg)
		if err != nil {
			return nil, err
		}
		if out == nil || out.NumExamples <= 0 { // PLN-EVL-001
			return nil, appErr("Evaluate must report more than 0 examples")
		}
		metrics, err := encodeMap(out.Metrics, s.server, "evaluate.metrics")
		if err != nil {
			return nil, appErr("%v", err)
		}
		return &pb.EvaluateResult{Loss: out.Loss, NumExamples: out.NumExamples, Metrics: metrics}, nil
	case *pb.Task_Query:
		q, ok := r.app.(Querier)
		if !ok || !s.features[featureQuery] {
			return nil, ErrUnsupported
		}
		inputs, err := dec.DecodeTensors(ins.Query.GetInputs(), "query.inputs")
		if err != nil {
			return nil, err
		}
		cfg, err := decodeMap(ins.Query.GetConfig(), r.opts.Limits, "query.config")
		if err != nil {
			return nil, err
		}
		out, err := q.Query(ctx, cfg, inputs)
		if err != nil {
			return nil, err
		}
		if out == nil || out.NumExamples < 0 { // PLN-QRY-003
			return nil, appErr("Query must report 0 or more examples")
		}
		tensors, err := r.encodeTensors(s, out.Tensors, "query.tensors")
		if err != nil {
			return nil, err
		}
		metrics, err := encodeMap(out.Metrics, s.server, "query.metrics")
		if err != nil {
			return nil, appErr("%v", err)
		}
		return &pb.QueryResult{Metrics: metrics, Tensors: tensors, NumExamples: out.NumExamples}, nil
	case *pb.Task_GetParameters:
		cfg, err := decodeMap(ins.GetParameters.GetConfig(), r.opts.Limits, "get_parameters.config")
		if err != nil {
			return nil, err
		}
		out, err := r.app.GetParameters(ctx, cfg)
		if err != nil {
			return nil, err
		}
		tensors, err := r.encodeTensors(s, out, "get_parameters.parameters")
		if err != nil {
			return nil, err
		}
		return &pb.GetParametersResult{Parameters: tensors}, nil
	case *pb.Task_GetProperties:
		cfg, err := decodeMap(ins.GetProperties.GetConfig(), r.opts.Limits, "get_properties.config")
		if err != nil {
			return nil, err
		}
		out, err := r.app.GetProperties(ctx, cfg)
		if err != nil {
			return nil, err
		}
		props, err := encodeMap(out, s.server, "get_properties.properties")
		if err != nil {
			return nil, appErr("%v", err)
		}
		return &pb.GetPropertiesResult{Properties: props}, nil
	}
	// No member set, or one this version does not know (PLN-TSK-025).
	return nil, NewError(CodeUnsupportedInstruction, "instruction", "instruction not supported")
}

// encodeTensors encodes an application's tensors for the server, refusing what the server's
// check order would reject (PLN-TEN-013).
func (r *runner) encodeTensors(s *session, ts []*Tensor, field string) ([]*pb.Tensor, error) {
	if uint64(len(ts)) > uint64(s.server.MaxTensors) {
		return nil, NewError(CodeLimitExceeded, field, "%d tensors exceed the server's max_tensors %d", len(ts), s.server.MaxTensors)
	}
	out := make([]*pb.Tensor, len(ts))
	for i, t := range ts {
		at := fmt.Sprintf("%s[%d]", field, i)
		if t == nil {
			return nil, appErr("%s is nil", at)
		}
		if !s.dtypes[t.DType] {
			return nil, appErr("%s has dtype %v, which the session did not negotiate", at, t.DType)
		}
		if uint64(len(t.Shape)) > uint64(s.server.MaxRank) {
			return nil, NewError(CodeLimitExceeded, at+".shape", "rank %d exceeds the server's max_rank", len(t.Shape))
		}
		if _, err := t.checkedNumel(); err != nil {
			return nil, appErr("%s is malformed: %v", at, err)
		}
		if uint64(len(t.Data)) > s.server.MaxTensorBytes {
			return nil, NewError(CodeLimitExceeded, at, "%d bytes exceed the server's max_tensor_bytes", len(t.Data))
		}
		codec := r.opts.ResultCodec
		if !s.codecs[codec] || !codecApplies(codec, t.DType) {
			codec = CodecRaw
		}
		payload, err := EncodePayload(t, codec, r.opts.ResultCodecOptions)
		if err != nil {
			return nil, withField(err, at)
		}
		name := t.Name
		if len(name) > 256 { // PLN-TEN-005
			name = truncate(name, 256)
		}
		pt := &pb.Tensor{Dtype: t.DType, Shape: append([]int64{}, t.Shape...), Codec: codec, Name: name,
			Payload: &pb.Tensor_InlineData{InlineData: payload}}
		if codec == CodecRaw {
			pt.Codec = "" // the empty id means raw and saves bytes
		}
		out[i] = pt
	}
	return out, nil
}

// resultTensors lists the tensors of a result, wherever its outcome keeps them.
func resultTensors(res *pb.TaskResult) []*pb.Tensor {
	switch o := res.GetOutcome().(type) {
	case *pb.TaskResult_Fit:
		return o.Fit.GetParameters()
	case *pb.TaskResult_Query:
		return o.Query.GetTensors()
	case *pb.TaskResult_GetParameters:
		return o.GetParameters.GetParameters()
	}
	return nil
}

// moveToBlobs moves the largest inline payloads into blobs until the request fits the server's
// max_message_bytes (PLN-BLB-003), and returns the moved payloads by digest.
func moveToBlobs(req *pb.SubmitResultRequest, maxMessage uint64) map[[32]byte][]byte {
	blobs := map[[32]byte][]byte{}
	budget := int64(maxMessage) - chunkOverhead
	ts := append([]*pb.Tensor{}, resultTensors(req.GetResult())...)
	sort.SliceStable(ts, func(i, j int) bool { return len(ts[i].GetInlineData()) > len(ts[j].GetInlineData()) })
	for _, t := range ts {
		if int64(proto.Size(req)) <= budget {
			break
		}
		data := t.GetInlineData()
		sum := sha256.Sum256(data)
		blobs[sum] = data
		t.Payload = &pb.Tensor_Blob{Blob: &pb.BlobRef{Sha256: sum[:], Size: uint64(len(data))}}
	}
	return blobs
}

// upload sends one blob in chunks, resuming from the server's committed size (PLN-BLB-021 to
// -024). A BLOB_DIGEST_MISMATCH restarts it from offset 0 after a backoff, up to blobAttempts
// times; after that the mismatch is returned, for the task to report as its failure. Other
// typed errors than SESSION_UNKNOWN mean the blob cannot be uploaded.
func (r *runner) upload(ctx context.Context, s *session, digest [32]byte, data []byte) error {
	total := uint64(len(data))
	call := func(offset uint64, chunk []byte) (resp *pb.UploadBlobResponse, err error) {
		err = r.retry(ctx, "UploadBlob", func() error {
			err := unary(ctx, r.opts.CallTimeout, func(c context.Context, o ...grpc.CallOption) (err error) {
				resp, err = r.blob.UploadBlob(c, &pb.UploadBlobRequest{SessionId: s.id, Sha256: digest[:],
					TotalSize: total, Offset: offset, Data: chunk}, o...)
				return err
			})
			if CodeOf(err) == CodeBlobDigestMismatch {
				// Retryable in the table, but never unchanged: the upload restarts at 0
				// (PLN-BLB-024), so it leaves the retry loop.
				return digestMismatch{err}
			}
			return err
		})
		return resp, err
	}
	// A status query first tells where a previous attempt (or session) left off.
	resp, err := call(0, nil)
	restarts := 0
	// Each round appends a chunk or learns the committed size, so the loop is bounded by the
	// number of chunks, with room for a few resets by the server.
	limit := 4*(len(data)/s.chunk+2) + 8
	for i := 0; err == nil && !resp.GetComplete(); i++ {
		committed := resp.GetCommittedSize()
		if committed > total || i >= limit {
			return NewError(CodeBlobIncomplete, "", "upload makes no progress (committed %d of %d)", committed, total)
		}
		end := min(committed+uint64(s.chunk), total)
		resp, err = call(committed, data[committed:end])
		var dm digestMismatch
		if errors.As(err, &dm) && restarts < blobAttempts {
			// The server discarded the bytes. Check that ours still match the digest, then
			// start over from 0 after the backoff of a retryable error (PLN-BLB-024,
			// PLN-RTY-007); the restart is a retry in the shared sequence.
			if sha256.Sum256(data) != digest {
				return NewError(CodeInternal, "", "the bytes of a blob changed while uploading")
			}
			restarts++
			r.failures++
			var retryAfter time.Duration
			var pe *Error
			if errors.As(dm.err, &pe) {
				retryAfter = pe.RetryAfter
			}
			d := r.opts.Backoff.delay(r.failures, retryAfter, r.opts.rand)
			r.opts.Logger.Info("pollen: upload refused as BLOB_DIGEST_MISMATCH; restarting from 0",
				"restart", restarts, "in", d)
			if !r.opts.sleep(ctx, d) {
				return errStopped
			}
			resp, err = &pb.UploadBlobResponse{}, nil
		}
	}
	var dm digestMismatch
	if errors.As(err, &dm) {
		return dm.err
	}
	return err
}

// digestMismatch carries an upload's BLOB_DIGEST_MISMATCH past the retry loop.
type digestMismatch struct{ err error }

func (d digestMismatch) Error() string { return d.err.Error() }

// fetcher returns the blob fetcher for the decode check order (step 7): a resumable,
// verified download (PLN-BLB-011 to -015).
func (r *runner) fetcher(ctx context.Context) func(*pb.BlobRef) ([]byte, error) {
	return func(ref *pb.BlobRef) ([]byte, error) {
		var last error
		for attempt := 0; attempt < blobAttempts; attempt++ {
			data, err := r.download(ctx, ref)
			if err == nil {
				if sum := sha256.Sum256(data); bytes.Equal(sum[:], ref.GetSha256()) {
					return data, nil
				}
				err = NewError(CodeBlobDigestMismatch, "", "downloaded bytes do not match the digest")
			}
			last = err
			if CodeOf(err) != CodeBlobDigestMismatch {
				return nil, err
			}
			// Discard everything and start again from offset 0 (PLN-BLB-015).
		}
		return nil, last
	}
}

func (r *runner) download(ctx context.Context, ref *pb.BlobRef) ([]byte, error) {
	size := ref.GetSize()
	var buf []byte // grows only as bytes arrive
	failures := 0
	for started := false; !started || uint64(len(buf)) < size; started = true {
		s := r.sess.Load()
		if s == nil {
			return nil, NewError(CodeUnavailable, "", "no session")
		}
		n, err := r.downloadStream(ctx, s, ref, &buf)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return nil, NewError(CodeAppError, "", "stopped")
		}
		var pe *Error
		if !errors.As(err, &pe) || pe.Code == CodeBlobDigestMismatch {
			return nil, err
		}
		if n > 0 {
			failures = 0 // progress restarts the budget
		}
		// A lost session is reopened by the heartbeats of the main loop; resume with it.
		if !pe.Retryable && !pe.sessionUnknown() {
			return nil, err
		}
		failures++
		if failures > r.opts.Backoff.AttemptsPerCall {
			return nil, err
		}
		if !r.opts.sleep(ctx, r.opts.Backoff.delay(failures, pe.RetryAfter, r.opts.rand)) {
			return nil, err
		}
	}
	return buf, nil
}

// downloadStream reads one DownloadBlob stream from len(*buf), appending to it, and checks
// the stream's framing (PLN-BLB-007, -012). It returns the number of bytes gained.
func (r *runner) downloadStream(ctx context.Context, s *session, ref *pb.BlobRef, buf *[]byte) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, downloadTimeout)
	defer cancel()
	start := len(*buf)
	size := ref.GetSize()
	stream, err := r.blob.DownloadBlob(cctx, &pb.DownloadBlobRequest{SessionId: s.id, Sha256: ref.GetSha256(), Offset: uint64(start)})
	if err != nil {
		return 0, fromRPC(err, nil)
	}
	bad := func(format string, args ...any) (int, error) {
		return len(*buf) - start, NewError(CodeBlobDigestMismatch, "", format, args...)
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if uint64(len(*buf)) != size {
				return bad("stream ended at %d of %d bytes", len(*buf), size)
			}
			return len(*buf) - start, nil
		}
		if err != nil {
			var md metadata.MD = stream.Trailer()
			return len(*buf) - start, peerCancel(fromRPC(err, md), cctx)
		}
		data := resp.GetData()
		switch {
		case resp.GetTotalSize() != size:
			return bad("stream total_size %d, reference says %d", resp.GetTotalSize(), size)
		case resp.GetOffset() != uint64(len(*buf)):
			return bad("chunk at offset %d, expected %d", resp.GetOffset(), len(*buf))
		case uint64(len(*buf))+uint64(len(data)) > size:
			return bad("chunk runs past the blob's end")
		case len(data) == 0 && uint64(len(*buf)) != size:
			return bad("empty chunk before the blob's end")
		case len(data) > s.chunk:
			return bad("chunk of %d bytes exceeds chunk_size_bytes", len(data))
		}
		*buf = append(*buf, data...)
	}
}
