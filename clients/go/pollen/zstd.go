package pollen

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

const (
	zstdMagic        = 0xFD2FB528
	zstdMaxWindow    = 128 << 20 // the largest window a decoder must accept (PLN-COD-011)
	zstdDefaultLevel = 3
)

// zstdHeader is what steps 1 to 3 of PLN-COD-010 need from a frame header.
type zstdHeader struct {
	contentSize    uint64
	hasContentSize bool
	dictID         uint32
	window         uint64
}

// parseZstdHeader reads a frame header by hand: the spec's checks on it (skippable frames,
// declared size, dictionary) come before any decompression, and the library would fold them
// into decoding.
func parseZstdHeader(p []byte) (zstdHeader, error) {
	var h zstdHeader
	bad := func(msg string) (zstdHeader, error) {
		return h, NewError(CodeCodecDataInvalid, "", "zstd: %s", msg)
	}
	if len(p) < 5 {
		return bad("payload too short for a frame header")
	}
	magic := binary.LittleEndian.Uint32(p)
	if magic&0xFFFFFFF0 == 0x184D2A50 {
		return bad("skippable frame")
	}
	if magic != zstdMagic {
		return bad("not a Zstandard frame")
	}
	fhd := p[4]
	if fhd&0x08 != 0 {
		return bad("reserved bit of the frame header descriptor is set")
	}
	single := fhd&0x20 != 0
	didSize := [4]int{0, 1, 2, 4}[fhd&3]
	fcsSize := [4]int{0, 2, 4, 8}[fhd>>6]
	if fcsSize == 0 && single {
		fcsSize = 1
	}
	pos := 5
	need := pos + didSize + fcsSize
	if !single {
		need++
	}
	if len(p) < need {
		return bad("truncated frame header")
	}
	if !single {
		wd := p[pos]
		pos++
		exp := uint64(wd >> 3)
		base := uint64(1) << (10 + exp)
		h.window = base + base/8*uint64(wd&7)
	}
	switch didSize {
	case 1:
		h.dictID = uint32(p[pos])
	case 2:
		h.dictID = uint32(binary.LittleEndian.Uint16(p[pos:]))
	case 4:
		h.dictID = binary.LittleEndian.Uint32(p[pos:])
	}
	pos += didSize
	switch fcsSize {
	case 1:
		h.contentSize = uint64(p[pos])
	case 2:
		h.contentSize = uint64(binary.LittleEndian.Uint16(p[pos:])) + 256
	case 4:
		h.contentSize = uint64(binary.LittleEndian.Uint32(p[pos:]))
	case 8:
		h.contentSize = binary.LittleEndian.Uint64(p[pos:])
	}
	h.hasContentSize = fcsSize > 0
	if single {
		h.window = h.contentSize
	}
	return h, nil
}

var zstdDecoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(zstdMaxWindow))
	if err != nil {
		panic(err) // only bad options make NewReader fail
	}
	return d
}}

// zstdDecode applies PLN-COD-010 in its order and returns the canonical bytes.
func zstdDecode(p []byte, expected uint64) ([]byte, error) {
	h, err := parseZstdHeader(p)
	if err != nil {
		return nil, err
	}
	if h.hasContentSize && h.contentSize != expected {
		return nil, NewError(CodeTensorSizeMismatch, "", "zstd frame declares %d bytes, expected %d", h.contentSize, expected)
	}
	// A dictionary id of 0 is the format's "no dictionary", so only a nonzero id is refused.
	if h.dictID != 0 {
		return nil, NewError(CodeCodecDataInvalid, "", "zstd frame names dictionary %d", h.dictID)
	}
	if h.window > zstdMaxWindow && h.window > expected {
		return nil, NewError(CodeCodecDataInvalid, "", "zstd window of %d bytes is too large", h.window)
	}
	frameLen, err := zstdFrameLen(p)
	if err != nil {
		return nil, err
	}
	dec := zstdDecoders.Get().(*zstd.Decoder)
	defer zstdDecoders.Put(dec)
	if err := dec.Reset(bytes.NewReader(p[:frameLen])); err != nil {
		return nil, NewError(CodeCodecDataInvalid, "", "zstd: %v", err)
	}
	// The output grows only as decompression produces it and stops one byte past the expected
	// size, so a small frame cannot make us allocate what it claims (PLN-TEN-010).
	var out bytes.Buffer
	n, err := io.Copy(&out, io.LimitReader(dec, int64(expected)+1))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, NewError(CodeCodecDataInvalid, "", "zstd: %v", err)
	}
	if uint64(n) != expected {
		return nil, NewError(CodeTensorSizeMismatch, "", "zstd frame holds %d bytes or more, expected %d", n, expected)
	}
	if frameLen != len(p) {
		return nil, NewError(CodeCodecDataInvalid, "", "%d bytes follow the zstd frame", len(p)-frameLen)
	}
	if expected == 0 {
		return []byte{}, nil
	}
	return out.Bytes(), nil
}

// zstdFrameLen walks the block headers to find where the first frame ends, which tells
// trailing data (a second frame included) apart from the frame itself.
func zstdFrameLen(p []byte) (int, error) {
	fhd := p[4]
	single := fhd&0x20 != 0
	pos := 5 + [4]int{0, 1, 2, 4}[fhd&3]
	fcs := [4]int{0, 2, 4, 8}[fhd>>6]
	if fcs == 0 && single {
		fcs = 1
	}
	pos += fcs
	if !single {
		pos++
	}
	for {
		if pos+3 > len(p) {
			return 0, NewError(CodeCodecDataInvalid, "", "zstd: truncated block header")
		}
		bh := uint32(p[pos]) | uint32(p[pos+1])<<8 | uint32(p[pos+2])<<16
		pos += 3
		size := int(bh >> 3)
		switch (bh >> 1) & 3 {
		case 1: // RLE: one byte stands for size bytes
			size = 1
		case 3:
			return 0, NewError(CodeCodecDataInvalid, "", "zstd: reserved block type")
		}
		if pos+size > len(p) {
			return 0, NewError(CodeCodecDataInvalid, "", "zstd: truncated block")
		}
		pos += size
		if bh&1 == 1 {
			break
		}
	}
	if fhd&0x04 != 0 {
		if pos+4 > len(p) {
			return 0, NewError(CodeCodecDataInvalid, "", "zstd: truncated checksum")
		}
		pos += 4
	}
	return pos, nil
}

// zstdEncode writes one frame without a dictionary (PLN-COD-007). A single-segment frame
// always records the content size (PLN-COD-008), and its window is the content size, which is
// never larger than PLN-COD-009 allows.
func zstdEncode(data []byte, level int) ([]byte, error) {
	if level == 0 {
		level = zstdDefaultLevel
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
		zstd.WithEncoderConcurrency(1), zstd.WithSingleSegment(true), zstd.WithZeroFrames(true))
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil), nil
}
