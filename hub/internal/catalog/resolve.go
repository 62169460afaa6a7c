package catalog

import (
	"context"
	"errors"
	"fmt"
)

// ErrAmbiguous: a VM name matches several VMs; the context id names one. It also wraps
// ErrConflict.
var ErrAmbiguous = errors.New("several VMs have this name; use the context id")

// ResolveVM finds a VM by context id, else by its name when exactly one VM has it: ErrNotFound
// when none does, ErrAmbiguous (and ErrConflict) when several do.
func (c *Catalog) ResolveVM(ctx context.Context, idOrName string) (*VMWithSource, error) {
	vm, err := c.VMByContextID(ctx, idOrName)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return vm, err
	}
	vms, n, err := c.VMs(ctx, VMFilter{Name: idOrName, Limit: 2})
	if err != nil {
		return nil, err
	}
	switch n {
	case 0:
		return nil, fmt.Errorf("vm %q: %w", idOrName, ErrNotFound)
	case 1:
		return &vms[0], nil
	default:
		return nil, fmt.Errorf("vm %q: %w: %w", idOrName, ErrAmbiguous, ErrConflict)
	}
}
