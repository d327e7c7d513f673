package pollen

import (
	"errors"
	"fmt"
	"time"

	pb "github.com/pollen-fl/pollen/clients/go/gen/pollen/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Code is a protocol error code (spec chapter 12). It is the generated enum, so codes added
// by a later minor version still round-trip as numbers.
type Code = pb.ErrorCode

// The error codes, under their spec names.
const (
	CodeInternal               = pb.ErrorCode_ERROR_CODE_INTERNAL
	CodeVersionUnsupported     = pb.ErrorCode_ERROR_CODE_VERSION_UNSUPPORTED
	CodeCapabilityMismatch     = pb.ErrorCode_ERROR_CODE_CAPABILITY_MISMATCH
	CodeInvalidArgument        = pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
	CodeSessionUnknown         = pb.ErrorCode_ERROR_CODE_SESSION_UNKNOWN
	CodeTaskUnknown            = pb.ErrorCode_ERROR_CODE_TASK_UNKNOWN
	CodeTaskNotAssigned        = pb.ErrorCode_ERROR_CODE_TASK_NOT_ASSIGNED
	CodeTaskExpired            = pb.ErrorCode_ERROR_CODE_TASK_EXPIRED
	CodeStaleRound             = pb.ErrorCode_ERROR_CODE_STALE_ROUND
	CodeResultMismatch         = pb.ErrorCode_ERROR_CODE_RESULT_MISMATCH
	CodeUpdateRejected         = pb.ErrorCode_ERROR_CODE_UPDATE_REJECTED
	CodeDtypeUnsupported       = pb.ErrorCode_ERROR_CODE_DTYPE_UNSUPPORTED
	CodeCodecUnsupported       = pb.ErrorCode_ERROR_CODE_CODEC_UNSUPPORTED
	CodeCodecDataInvalid       = pb.ErrorCode_ERROR_CODE_CODEC_DATA_INVALID
	CodeTensorSizeMismatch     = pb.ErrorCode_ERROR_CODE_TENSOR_SIZE_MISMATCH
	CodeShapeInvalid           = pb.ErrorCode_ERROR_CODE_SHAPE_INVALID
	CodeTensorValueInvalid     = pb.ErrorCode_ERROR_CODE_TENSOR_VALUE_INVALID
	CodeLimitExceeded          = pb.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED
	CodeBlobNotFound           = pb.ErrorCode_ERROR_CODE_BLOB_NOT_FOUND
	CodeBlobDigestMismatch     = pb.ErrorCode_ERROR_CODE_BLOB_DIGEST_MISMATCH
	CodeBlobIncomplete         = pb.ErrorCode_ERROR_CODE_BLOB_INCOMPLETE
	CodeUnsupportedInstruction = pb.ErrorCode_ERROR_CODE_UNSUPPORTED_INSTRUCTION
	CodeAppError               = pb.ErrorCode_ERROR_CODE_APP_ERROR
	CodeUnavailable            = pb.ErrorCode_ERROR_CODE_UNAVAILABLE
	CodeUnauthenticated        = pb.ErrorCode_ERROR_CODE_UNAUTHENTICATED
)

// retryKind is the retry column of the error table.
type retryKind int

const (
	retryNo retryKind = iota
	retryYes
	retryAfterHandshake
)

// errorTable is spec/errors.yaml: the retry rule of every code this client knows. Codes
// missing here are decided by Error.retryable (PLN-ERR-004).
var errorTable = map[Code]retryKind{
	CodeInternal:               retryYes,
	CodeVersionUnsupported:     retryNo,
	CodeCapabilityMismatch:     retryNo,
	CodeInvalidArgument:        retryNo,
	CodeSessionUnknown:         retryAfterHandshake,
	CodeTaskUnknown:            retryNo,
	CodeTaskNotAssigned:        retryNo,
	CodeTaskExpired:            retryNo,
	CodeStaleRound:             retryNo,
	CodeResultMismatch:         retryNo,
	CodeUpdateRejected:         retryNo,
	CodeDtypeUnsupported:       retryNo,
	CodeCodecUnsupported:       retryNo,
	CodeCodecDataInvalid:       retryNo,
	CodeTensorSizeMismatch:     retryNo,
	CodeShapeInvalid:           retryNo,
	CodeTensorValueInvalid:     retryNo,
	CodeLimitExceeded:          retryNo,
	CodeBlobNotFound:           retryNo,
	CodeBlobDigestMismatch:     retryYes,
	CodeBlobIncomplete:         retryNo,
	CodeUnsupportedInstruction: retryNo,
	CodeAppError:               retryNo,
	CodeUnavailable:            retryYes,
	CodeUnauthenticated:        retryNo,
}

// Error is a typed Pollen error: one received in a pollen-error-bin trailer, one produced by
// decoding a tensor or value, or one an application returns to report a specific code.
type Error struct {
	Code    Code
	Message string
	// Field is the path of the failing part, e.g. "fit.parameters[2].shape".
	Field string
	// Retryable is what the error table says for Code (or the sender's flag for codes this
	// client does not know).
	Retryable  bool
	RetryAfter time.Duration
	// SupportedVersions and SupportedCodecs are filled for VERSION_UNSUPPORTED and
	// CODEC_UNSUPPORTED.
	SupportedVersions []*pb.ProtocolVersion
	SupportedCodecs   []string
	// Status is the gRPC status the error arrived with; codes.OK for local errors.
	Status codes.Code
	// Typed is false for a failed RPC that carried no parseable trailer (a bare status).
	Typed bool
}

// NewError makes a local typed error whose retryability follows the error table.
func NewError(code Code, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...),
		Retryable: errorTable[code] == retryYes, Typed: true}
}

func (e *Error) Error() string {
	name := CodeName(e.Code)
	if !e.Typed {
		name = "gRPC " + e.Status.String()
	}
	if e.Field != "" {
		return fmt.Sprintf("%s at %s: %s", name, e.Field, e.Message)
	}
	return fmt.Sprintf("%s: %s", name, e.Message)
}

// Is makes errors.Is(err, &Error{Code: c}) match on the code alone.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && t.Typed == e.Typed
}

// CodeName gives the spec's name of a code, e.g. "TENSOR_SIZE_MISMATCH".
func CodeName(c Code) string {
	n := c.String()
	const prefix = "ERROR_CODE_"
	if len(n) > len(prefix) && n[:len(prefix)] == prefix {
		return n[len(prefix):]
	}
	return n
}

// CodeOf returns the code of a typed error anywhere in err's chain, or UNSPECIFIED.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) && e.Typed {
		return e.Code
	}
	return pb.ErrorCode_ERROR_CODE_UNSPECIFIED
}

// withField prefixes the field path of a typed error, so that a decoder deep in a message can
// report "shape" and its callers turn it into "fit.parameters[2].shape".
func withField(err error, prefix string) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	c := *e
	switch {
	case c.Field == "":
		c.Field = prefix
	case c.Field[0] == '[':
		c.Field = prefix + c.Field
	default:
		c.Field = prefix + "." + c.Field
	}
	return &c
}

// toProto turns an error into the Error message of a task failure. Errors that are not typed
// are application failures (PLN-TSK-026).
func toProto(err error) *pb.Error {
	var e *Error
	if !errors.As(err, &e) || !e.Typed || e.Code == pb.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return &pb.Error{Code: CodeAppError, Message: truncate(err.Error(), 1024)}
	}
	return &pb.Error{Code: e.Code, Message: truncate(e.Message, 1024), Field: e.Field,
		Retryable: errorTable[e.Code] == retryYes, SupportedCodecs: e.SupportedCodecs}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a UTF-8 boundary so the message stays valid text.
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

const errorTrailer = "pollen-error-bin"

// fromRPC classifies a failed RPC: the typed error of its trailer when there is one that
// parses (PLN-TRN-012), else a bare status (PLN-TRN-013).
func fromRPC(err error, trailer map[string][]string) *Error {
	if err == nil {
		return nil
	}
	st, _ := status.FromError(err)
	if vals := trailer[errorTrailer]; len(vals) > 0 {
		var m pb.Error
		if proto.Unmarshal([]byte(vals[len(vals)-1]), &m) == nil {
			return fromProto(&m, st.Code())
		}
	}
	code := st.Code()
	return &Error{Status: code, Message: st.Message(),
		Retryable: code == codes.Unavailable || code == codes.DeadlineExceeded || code == codes.Aborted}
}

func fromProto(m *pb.Error, st codes.Code) *Error {
	code := m.GetCode()
	if code == pb.ErrorCode_ERROR_CODE_UNSPECIFIED {
		code = CodeInternal // PLN-ERR-002
	}
	e := &Error{Code: code, Message: m.GetMessage(), Field: m.GetField(), Status: st, Typed: true,
		RetryAfter:        time.Duration(m.GetRetryAfterMs()) * time.Millisecond,
		SupportedVersions: m.GetSupportedVersions(), SupportedCodecs: m.GetSupportedCodecs()}
	if k, known := errorTable[code]; known {
		e.Retryable = k == retryYes // PLN-ERR-004: the code decides, not the flag
	} else {
		e.Retryable = m.GetRetryable()
	}
	return e
}

func (e *Error) sessionUnknown() bool { return e.Typed && e.Code == CodeSessionUnknown }
