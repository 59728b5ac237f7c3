// Package testimage generates deterministic, semi-compressible disk images
// for imagestream's tests, benchmarks and their helper programs: the same
// seed and size always give the same bytes, so nothing large is committed
// and a generated image can be cached by its parameters. It is test
// support: production code must not import it.
package testimage

import (
	"io"
	"math/rand/v2"
)

// Version changes whenever the bytes Fill produces change; caches of
// generated images include it in their key.
const Version = 1

// BlockSize is the granularity of the mix: each block is random
// (incompressible, 30 %), text-like (compresses about 4x, 40 %) or zeros
// (30 %), chosen by the seed.
const BlockSize = 64 << 10

// New returns size bytes of image seed.
func New(seed uint64, size int) []byte {
	b := make([]byte, size)
	Fill(seed, b, 0)
	return b
}

// Fill writes the bytes of image seed found at offset off into b.
func Fill(seed uint64, b []byte, off int64) {
	blk := make([]byte, BlockSize)
	for len(b) > 0 {
		bi, in := off/BlockSize, off%BlockSize
		n := min(int64(len(b)), BlockSize-in)
		block(seed, bi, blk)
		copy(b[:n], blk[in:in+n])
		b, off = b[n:], off+n
	}
}

// Write writes size bytes of image seed to w, block by block.
func Write(w io.Writer, seed uint64, size int64) error {
	blk := make([]byte, BlockSize)
	for bi := int64(0); bi*BlockSize < size; bi++ {
		block(seed, bi, blk)
		n := min(BlockSize, size-bi*BlockSize)
		if _, err := w.Write(blk[:n]); err != nil {
			return err
		}
	}
	return nil
}

// block fills blk with block bi of image seed.
func block(seed uint64, bi int64, blk []byte) {
	words := [...]string{"ingot ", "ironic ", "agent ", "deploy ", "image ", "stream ", "zstd ", "disk\n", "boot ", "raw "}
	r := rand.New(rand.NewPCG(seed, uint64(bi)))
	switch k := r.IntN(10); {
	case k < 3:
		for i := 0; i+8 <= len(blk); i += 8 {
			v := r.Uint64()
			blk[i], blk[i+1], blk[i+2], blk[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
			blk[i+4], blk[i+5], blk[i+6], blk[i+7] = byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
		}
	case k < 7:
		for i := 0; i < len(blk); {
			i += copy(blk[i:], words[r.IntN(len(words))])
		}
	default:
		clear(blk)
	}
	if bi == 0 {
		copy(blk, []byte{0xeb, 0x63, 0x90}) // a boot sector's jump
		blk[510], blk[511] = 0x55, 0xaa
	}
}
