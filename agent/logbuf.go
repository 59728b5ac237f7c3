package agent

import "sync"

// LogBuffer keeps the last bytes of the agent's log for
// log.collect_system_logs; it is an io.Writer safe for concurrent use.
type LogBuffer struct {
	mu   sync.Mutex
	max  int
	data []byte
}

// NewLogBuffer keeps up to max bytes.
func NewLogBuffer(max int) *LogBuffer { return &LogBuffer{max: max} }

// Write appends p, dropping the oldest bytes beyond the limit.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.data = append(b.data, p...)
	if over := len(b.data) - b.max; over > 0 {
		b.data = append(b.data[:0], b.data[over:]...)
	}
	return len(p), nil
}

// Bytes returns a copy of what is kept.
func (b *LogBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.data...)
}
