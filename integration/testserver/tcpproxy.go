package testserver

import (
	"io"
	"net"
	"sync"
	"testing"
)

// TCPProxy forwards TCP connections to an upstream address and can stall
// them: stop forwarding in both directions while keeping every
// connection open, the way a broken network path or a hung middlebox
// looks to both ends (keepalives still answered by the proxy's kernel).
type TCPProxy struct {
	Addr     string // host:port to connect to
	upstream string
	ln       net.Listener
	stall    chan struct{} // closed by Stall
	stallOne sync.Once
	done     chan struct{} // closed when the test ends
	mu       sync.Mutex
	conns    []net.Conn
}

// StartTCPProxy proxies to upstream until the test ends.
func StartTCPProxy(t testing.TB, upstream string) *TCPProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testserver: TCP proxy: %v", err)
	}
	p := &TCPProxy{Addr: ln.Addr().String(), upstream: upstream, ln: ln, stall: make(chan struct{}), done: make(chan struct{})}
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Port is the proxy's port.
func (p *TCPProxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Stall stops forwarding on every connection, open or new; nothing is
// closed.
func (p *TCPProxy) Stall() { p.stallOne.Do(func() { close(p.stall) }) }

func (p *TCPProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go p.pipe(u, c)
		go p.pipe(c, u)
	}
}

// pipe copies src to dst until either fails, holding every byte once the
// proxy is stalled.
func (p *TCPProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.stall:
			<-p.done // hold the bytes, and the connection, until the end
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				dst.Close()
			}
			return
		}
	}
}

func (p *TCPProxy) close() {
	p.ln.Close()
	close(p.done)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
