package pollen

import (
	"bytes"
	"crypto/sha256"
)

// ChunkOutcome is what an Assembler did with a chunk.
type ChunkOutcome string

// The outcomes of feeding a chunk.
const (
	ChunkAppended  ChunkOutcome = "appended"
	ChunkDuplicate ChunkOutcome = "duplicate"
	ChunkRejected  ChunkOutcome = "rejected"
)

// Assembler reassembles a blob from chunks with the append-only rules of spec chapter 11: a
// chunk at the committed size is appended, one lying within the committed bytes is a
// duplicate, any other is rejected; nothing is written past the declared size.
type Assembler struct {
	sha   []byte
	total uint64
	buf   bytes.Buffer
}

// NewAssembler starts a blob of the given digest and size.
func NewAssembler(sha []byte, totalSize uint64) *Assembler {
	return &Assembler{sha: append([]byte{}, sha...), total: totalSize}
}

// Committed is the number of bytes appended so far.
func (a *Assembler) Committed() uint64 { return uint64(a.buf.Len()) }

// Feed offers one chunk.
func (a *Assembler) Feed(offset uint64, data []byte) (ChunkOutcome, error) {
	end := offset + uint64(len(data))
	if end < offset || end > a.total {
		return "", NewError(CodeInvalidArgument, "offset", "chunk [%d, %d) ends past the blob's %d bytes", offset, end, a.total)
	}
	committed := a.Committed()
	switch {
	case offset == committed && len(data) > 0:
		a.buf.Write(data)
		return ChunkAppended, nil
	case end <= committed:
		return ChunkDuplicate, nil
	default:
		return ChunkRejected, nil
	}
}

// Finish checks completeness, then the digest, and returns the blob.
func (a *Assembler) Finish() ([]byte, error) {
	if a.Committed() != a.total {
		return nil, NewError(CodeBlobIncomplete, "", "%d of %d bytes committed", a.Committed(), a.total)
	}
	sum := sha256.Sum256(a.buf.Bytes())
	if !bytes.Equal(sum[:], a.sha) {
		return nil, NewError(CodeBlobDigestMismatch, "", "blob digest does not match")
	}
	return a.buf.Bytes(), nil
}
