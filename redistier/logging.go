package redistier

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisLog routes go-redis's own log lines (a pool that cannot dial, a rejected connection)
// through a slog logger, so that a process logging JSON writes nothing else. go-redis has one
// logger per process: the last tier created sets it; every cachewire binary has one logger.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "), "component", "go-redis")
}

// routeRedisLogs makes log the destination of go-redis's log lines.
func routeRedisLogs(log *slog.Logger) { redis.SetLogger(redisLog{log: log}) }
