package main

import (
	"context"
	"io"
)

func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer, env *environment) error {
	return usageErr("probe: not implemented yet")
}
