package api

import "fmt"

// JobDisksReport is the body of PUT /api/v1/agent/jobs/{id}/disks: the job's VM's disks as its
// snapshot captured them. The hub records disks added since discovery at once and takes every
// disk's geometry from this report (checked like an inventory's disks), then answers the job
// with the disks to back up; upload sessions must use exactly that geometry.
type JobDisksReport struct {
	Disks []Disk `json:"disks"`
}

// Validate checks the report like the disks of an inventory.
func (r *JobDisksReport) Validate() error {
	if len(r.Disks) > MaxDisksPerVM {
		return &FieldError{"disks", fmt.Sprintf("%d disks, more than the limit of %d per VM (MaxDisksPerVM)", len(r.Disks), MaxDisksPerVM)}
	}
	seen := make(map[int32]int, len(r.Disks))
	for i := range r.Disks {
		d := &r.Disks[i]
		p := fmt.Sprintf("disks[%d]", i)
		if k, dup := seen[d.Key]; dup {
			return &FieldError{p + ".key", fmt.Sprintf("duplicate device key %d (also disks[%d])", d.Key, k)}
		}
		seen[d.Key] = i
		if err := d.validate(p); err != nil {
			return err
		}
	}
	return nil
}
