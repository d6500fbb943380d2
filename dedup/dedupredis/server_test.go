package dedupredis_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/require"
)

// server is a private redis-server for tests that stop and restart Redis;
// the shared server on 6379 is never touched. It keeps nothing on disk, so
// a restart starts empty, like a Redis without persistence.
type server struct {
	port int
	dir  string
	cmd  *exec.Cmd
}

// startServer starts a redis-server on a free port; the test's cleanup
// kills it.
func startServer(t testing.TB) *server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("this test runs its own redis-server, which is not installed: %v (run `make services`)", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &server{port: l.Addr().(*net.TCPAddr).Port, dir: t.TempDir()}
	require.NoError(t, l.Close())
	s.start(t)
	t.Cleanup(func() { s.stop(t) })
	return s
}

func (s *server) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// start runs redis-server and waits until it answers PING.
func (s *server) start(t testing.TB) {
	t.Helper()
	require.NoError(t, s.run())
}

// run is start for goroutines other than the test's (no FailNow).
func (s *server) run() error {
	if s.cmd != nil {
		return errors.New("redis-server already running")
	}
	cmd := exec.Command("redis-server",
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--logfile", "", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ping(s.addr())
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server on %s does not answer: %w", s.addr(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop kills the server (like a crash: nothing is saved) and waits for it.
func (s *server) stop(testing.TB) { s.kill() }

func (s *server) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// ping sends PING over a plain connection (no client, no goroutines).
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return &net.AddrError{Err: "unexpected reply " + strconv.Quote(line), Addr: addr}
	}
	return nil
}

// fastClient returns a client for addr that gives up quickly when the
// server is unreachable, as the package documentation recommends.
func fastClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                     addr,
		DialTimeout:              200 * time.Millisecond,
		ReadTimeout:              200 * time.Millisecond,
		WriteTimeout:             200 * time.Millisecond,
		PoolTimeout:              300 * time.Millisecond,
		PoolSize:                 4,
		MaxRetries:               1,
		DialerRetries:            1,
		ContextTimeoutEnabled:    true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}
