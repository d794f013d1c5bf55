package topics_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/internal/topics"
)

func TestCreateDescribeDelete(t *testing.T) {
	k := testenv.NewKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := testenv.TopicName(t, "admin")
	if _, err := k.Admin().Partitions(ctx, name); !errors.Is(err, topics.ErrNotFound) {
		t.Fatalf("Partitions of a missing topic: %v, want ErrNotFound", err)
	}
	if err := k.Admin().Create(ctx, topics.Spec{Name: name, Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	if err := k.Admin().Create(ctx, topics.Spec{Name: name, Partitions: 5}); err != nil {
		t.Fatalf("creating an existing topic again: %v, want nil", err)
	}
	if n, err := k.Admin().Partitions(ctx, name); err != nil || n != 3 {
		t.Fatalf("Partitions = %d, %v; want 3", n, err)
	}
	if err := k.Admin().Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, func() string {
		if _, err := k.Admin().Partitions(ctx, name); !errors.Is(err, topics.ErrNotFound) {
			return "topic still there after Delete: " + errString(err)
		}
		return ""
	})
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}
