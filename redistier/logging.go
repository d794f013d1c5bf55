package redistier

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cachewire/cachewire/internal/retry"
)

// redisLog routes go-redis's own log lines (a pool that cannot dial, a rejected connection)
// through a slog logger, so that a process logging JSON writes nothing else. go-redis has one
// logger per process: the last tier created sets it; every cachewire binary has one logger.
// A dead server makes every pool log each failed dial, dozens of lines a second while a Redis
// Cluster fails over: at most 5 lines a second are written, the next one saying how many were
// dropped.
type redisLog struct {
	log        *slog.Logger
	limit      *retry.LogLimiter
	suppressed *atomic.Int64
}

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	if !l.limit.Allow() {
		l.suppressed.Add(1)
		return
	}
	attrs := []any{"component", "go-redis"}
	if n := l.suppressed.Swap(0); n > 0 {
		attrs = append(attrs, "suppressed", n)
	}
	l.log.WarnContext(ctx, strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "), attrs...)
}

// routeRedisLogs makes log the destination of go-redis's log lines.
func routeRedisLogs(log *slog.Logger) { redis.SetLogger(newRedisLog(log)) }

func newRedisLog(log *slog.Logger) redisLog {
	return redisLog{log: log, limit: retry.NewLogLimiter(5, time.Second), suppressed: new(atomic.Int64)}
}
