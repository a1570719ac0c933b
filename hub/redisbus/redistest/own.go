package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ownWait bounds waiting for an own server to answer or to stop: a deadline
// against hangs, not a measure of speed.
const ownWait = 30 * time.Second

// Own is a redis-server child process of the test's own, on a Unix socket in
// a temporary directory, which the test may stop and start again. It keeps
// no data: after Stop, Start brings it back empty, as a Redis without
// persistence comes back. The machine's shared server is never touched.
type Own struct {
	bin, dir, sock string
	cmd            *exec.Cmd
	exited         chan struct{}
}

// StartOwn starts an own server, killed when the test ends. Without
// redis-server installed it skips the test, or fails it in CI.
func StartOwn(t testing.TB) *Own {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("SWITCHBOARD_CI") != "" {
			t.Fatal("redis-server is required in CI")
		}
		t.Skip("redis-server not installed")
	}
	dir := t.TempDir()
	o := &Own{bin: bin, dir: dir, sock: filepath.Join(dir, "redis.sock")}
	o.Start(t)
	t.Cleanup(o.kill)
	return o
}

// URL is the unix:// URL of the server.
func (o *Own) URL() string { return "unix://" + o.sock }

// Client opens a client of the server; the caller closes it.
func (o *Own) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Network: "unix", Addr: o.sock, MaxRetries: -1})
}

// Start starts the server (again) and waits until it answers.
func (o *Own) Start(t testing.TB) {
	t.Helper()
	o.cmd = exec.Command(o.bin, "--port", "0", "--unixsocket", o.sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", o.dir, "--logfile", filepath.Join(o.dir, "redis.log"))
	if err := o.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(o.cmd, o.exited)
	c := o.Client()
	defer c.Close()
	if err := awaitPing(c, o.exited); err != nil {
		t.Fatalf("redis-server: %v\n%s", err, o.log())
	}
}

// awaitPing waits until c's server answers a PING, for at most ownWait or
// until its process exits.
func awaitPing(c *redis.Client, exited <-chan struct{}) error {
	deadline := time.Now().Add(ownWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited: %w", err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("does not answer: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the server without saving: its data is gone.
func (o *Own) Stop(t testing.TB) {
	t.Helper()
	o.shutdown(t, (*redis.Client).ShutdownNoSave)
}

// StopSaving saves the data set to the dump in the server's directory and
// stops the server: Start brings it back with its data, as a Redis with
// persistence comes back.
func (o *Own) StopSaving(t testing.TB) {
	t.Helper()
	o.shutdown(t, (*redis.Client).ShutdownSave)
}

// shutdown sends the server a SHUTDOWN and waits for it to exit.
func (o *Own) shutdown(t testing.TB, cmd func(*redis.Client, context.Context) *redis.StatusCmd) {
	t.Helper()
	c := o.Client()
	defer c.Close()
	cmd(c, context.Background()) // the server hangs up: no reply
	select {
	case <-o.exited:
	case <-time.After(ownWait):
		t.Fatalf("redis-server did not stop\n%s", o.log())
	}
}

// Kill kills the server with SIGKILL, as a crash would, and waits for it
// to exit; Start brings it back empty.
func (o *Own) Kill() { o.kill() }

func (o *Own) kill() {
	if o.cmd != nil && o.cmd.Process != nil {
		o.cmd.Process.Kill()
		<-o.exited
	}
}

func (o *Own) log() string {
	b, _ := os.ReadFile(filepath.Join(o.dir, "redis.log"))
	return string(b)
}
