package api

import (
	"errors"
	"testing"
)

// An in-place request needs its confirmation and nothing of a new VM's; a new-VM request takes
// no confirmation. Each refusal names its field.
func TestRestoreRequestInPlace(t *testing.T) {
	newVM := RestoreTarget{Source: "vc1", Datacenter: "DC0", Datastore: "LocalDS_0", Name: "x"}
	for _, tc := range []struct {
		name  string
		req   RestoreRequest
		field string // "" = valid
	}{
		{"in place", RestoreRequest{BackupID: "bk-1", InPlace: true, Confirm: "db1"}, ""},
		{"in place unconfirmed", RestoreRequest{BackupID: "bk-1", InPlace: true}, "confirm"},
		{"in place with a target", RestoreRequest{BackupID: "bk-1", InPlace: true, Confirm: "db1", Target: newVM}, "target"},
		{"in place with a network map", RestoreRequest{BackupID: "bk-1", InPlace: true, Confirm: "db1", NetworkMap: map[string]string{"a": "b"}}, "network_map"},
		{"in place with new macs", RestoreRequest{BackupID: "bk-1", InPlace: true, Confirm: "db1", MACAddresses: MACNew}, "mac_addresses"},
		{"new vm confirmed", RestoreRequest{BackupID: "bk-1", Confirm: "db1", Target: newVM}, "confirm"},
		{"new vm", RestoreRequest{BackupID: "bk-1", Target: newVM}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.req.Normalize()
			var fe *FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field):
				t.Fatalf("got %v, want an error naming %s", err, tc.field)
			}
		})
	}
}
