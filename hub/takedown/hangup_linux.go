//go:build linux

package takedown

import (
	"net"
	"sync"
	"syscall"
)

// hangups watches the hijacked connections of held requests for their
// client's hang-up: one epoll set and one goroutine for all of them, which
// runs only while some connection is watched. Each connection is watched
// for EPOLLRDHUP (the client's FIN), EPOLLHUP and EPOLLERR (a reset), once:
// bytes the client sends are not a hang-up, and stay unread.
var hangups = &hangupWatcher{epfd: -1, watches: map[int32]*hangupWatch{}}

type hangupWatcher struct {
	mu      sync.Mutex
	epfd    int    // -1 while no goroutine runs
	pipe    [2]int // wakes the goroutine when the last watch stops
	next    int32  // the last token given; 0 is the pipe's
	watches map[int32]*hangupWatch
}

type hangupWatch struct {
	fd int
	fn func()
}

// watchHangup calls fn once, from the watcher's goroutine, when the client
// of conn hangs up. stop ends the watch; it must be called before conn is
// closed (its descriptor could be another connection's next). ok is false
// when conn has no descriptor to watch: the hang-up is then seen only when
// the answer is written.
func watchHangup(conn net.Conn, fn func()) (stop func(), ok bool) {
	rc := rawConn(conn)
	if rc == nil {
		return nil, false
	}
	w := hangups
	var tok int32
	var err error
	cerr := rc.Control(func(fd uintptr) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.epfd < 0 {
			if err = w.startLocked(); err != nil {
				return
			}
		}
		w.next++
		if w.next <= 0 {
			w.next = 1
		}
		tok = w.next
		ev := syscall.EpollEvent{Events: syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: tok}
		if err = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
			w.stopIfIdleLocked()
			return
		}
		w.watches[tok] = &hangupWatch{fd: int(fd), fn: fn}
	})
	if cerr != nil || err != nil {
		return nil, false
	}
	return func() { w.stop(tok) }, true
}

// startLocked makes the epoll set and starts its goroutine.
func (w *hangupWatcher) startLocked() error {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	if err := syscall.Pipe2(w.pipe[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: 0}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, w.pipe[0], &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(w.pipe[0])
		syscall.Close(w.pipe[1])
		return err
	}
	w.epfd = epfd
	go w.run(epfd, w.pipe[0])
	return nil
}

func (w *hangupWatcher) stop(tok int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	hw := w.watches[tok]
	if hw == nil {
		return // fired
	}
	delete(w.watches, tok)
	_ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, hw.fd, nil)
	w.stopIfIdleLocked()
}

// stopIfIdleLocked wakes the goroutine to end when nothing is watched.
func (w *hangupWatcher) stopIfIdleLocked() {
	if len(w.watches) == 0 {
		_, _ = syscall.Write(w.pipe[1], []byte{0})
	}
}

// run waits for hang-ups and calls their functions, until nothing is
// watched.
func (w *hangupWatcher) run(epfd, wake int) {
	events := make([]syscall.EpollEvent, 128)
	var fns []func()
	var b [64]byte
	for {
		n, err := syscall.EpollWait(epfd, events, -1)
		if err != nil && err != syscall.EINTR {
			n = 0 // not expected; the idle check below still runs
		}
		w.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			if ev.Fd == 0 {
				for {
					if k, _ := syscall.Read(wake, b[:]); k <= 0 {
						break
					}
				}
				continue
			}
			if hw := w.watches[ev.Fd]; hw != nil {
				delete(w.watches, ev.Fd)
				_ = syscall.EpollCtl(epfd, syscall.EPOLL_CTL_DEL, hw.fd, nil)
				fns = append(fns, hw.fn)
			}
		}
		idle := len(w.watches) == 0
		if idle {
			syscall.Close(epfd)
			syscall.Close(w.pipe[0])
			syscall.Close(w.pipe[1])
			w.epfd = -1
		}
		w.mu.Unlock()
		for i, fn := range fns {
			fn()
			fns[i] = nil
		}
		fns = fns[:0]
		if idle {
			return
		}
	}
}
