package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// EnvRedisURL names the environment variable that points the tests at an
// existing Redis server (redis://[user:password@]host:port/db).
const EnvRedisURL = "DUPLEX_TEST_REDIS_URL"

// defaultRedisURL is the local server started by `make services`.
const defaultRedisURL = "redis://127.0.0.1:6379/0"

// redisKeyPrefix starts every prefix handed out by Redis.
const redisKeyPrefix = "duplex_t:"

// RedisEnv is a Redis client and a key prefix reserved for one test by
// [Redis]. Keys under Prefix are deleted when the test ends.
//
// (It cannot be called Redis: that name is taken by the constructor.)
type RedisEnv struct {
	// URL is the server URL (redis://...), for code that builds its own
	// client.
	URL string
	// Client is connected to the server and closed by the cleanup.
	Client *redis.Client
	// Prefix is unique to the test: duplex_t:<test name>:<random>: .
	// Tests must only create keys starting with it.
	Prefix string
}

var (
	redisOnce   sync.Once
	redisURL    string
	redisSource string
	redisErr    error
)

// redisServer discovers the server once per process.
func redisServer() (string, string, error) {
	redisOnce.Do(func() { redisURL, redisSource, redisErr = discoverRedis() })
	return redisURL, redisSource, redisErr
}

func discoverRedis() (string, string, error) {
	ctx := context.Background()
	if raw := os.Getenv(EnvRedisURL); raw != "" {
		if err := pingRedis(ctx, raw, 10*time.Second); err != nil {
			return "", "", fmt.Errorf("%s does not answer: %w", EnvRedisURL, err)
		}
		return raw, EnvRedisURL, nil
	}

	localErr := pingRedis(ctx, defaultRedisURL, probeTimeout)
	if localErr == nil {
		return defaultRedisURL, "local server", nil
	}

	u, containerErr := startRedisContainer(ctx)
	if containerErr == nil {
		return u, "redis:7 container", nil
	}
	return "", "", fmt.Errorf("no Redis server available:\n"+
		"  - %s is not set\n"+
		"  - %s does not answer: %v\n"+
		"  - starting a redis:7 container with testcontainers failed: %v\n"+
		"Run `make services` (installs and starts a local Redis) or set %s to the URL of a Redis server",
		EnvRedisURL, defaultRedisURL, localErr, containerErr, EnvRedisURL)
}

// newRedisClient builds a client for rawURL. Maintenance notifications
// (a Redis Enterprise / Redis 8 feature) are disabled so that clients do not
// log a fallback warning against plain Redis 7 servers.
func newRedisClient(rawURL string) (*redis.Client, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return redis.NewClient(opt), nil
}

func pingRedis(ctx context.Context, rawURL string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := newRedisClient(rawURL)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Ping(ctx).Err()
}

func startRedisContainer(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        "redis:7",
			ExposedPorts: []string{"6379/tcp"},
			Cmd:          []string{"redis-server", "--save", "", "--appendonly", "no"},
			WaitingFor: wait.ForAll(
				wait.ForLog("Ready to accept connections"),
				wait.ForListeningPort("6379/tcp"),
			),
		},
		Started: true,
	})
	if err != nil {
		if c != nil {
			_ = c.Terminate(context.Background())
		}
		return "", err
	}
	hostPort, err := c.PortEndpoint(ctx, "6379/tcp", "")
	if err != nil {
		_ = c.Terminate(context.Background())
		return "", err
	}
	u := "redis://" + hostPort + "/0"
	if err := pingRedis(ctx, u, 30*time.Second); err != nil {
		_ = c.Terminate(context.Background())
		return "", err
	}
	return u, nil
}

// Redis returns a client for the test Redis server and a key prefix unique
// to this call (duplex_t:<sanitized test name>:<random>:).
//
// The cleanup registered on t deletes every key under the prefix (SCAN +
// DEL) and closes the client. If no server is available the test fails with
// instructions; it is never skipped.
func Redis(t testing.TB) *RedisEnv {
	t.Helper()
	rawURL, source, err := redisServer()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	client, err := newRedisClient(rawURL)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	r := &RedisEnv{
		URL:    rawURL,
		Client: client,
		Prefix: redisKeyPrefix + truncate(sanitize(t.Name()), 60) + ":" + randomHex(t, 4) + ":",
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		err := deleteKeys(ctx, client, r.Prefix)
		err = errors.Join(err, client.Close())
		if err != nil {
			t.Errorf("testenv: cleaning up Redis prefix %s: %v", r.Prefix, err)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatalf("testenv: Redis (%s) does not answer: %v", source, err)
	}
	return r
}

// deleteKeys deletes all keys starting with prefix. The prefix only holds
// [a-z0-9_:] so it needs no glob escaping.
func deleteKeys(ctx context.Context, c *redis.Client, prefix string) error {
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			// UNLINK would do too; DEL keeps it simple and synchronous.
			if err := c.Del(ctx, keys...).Err(); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}
