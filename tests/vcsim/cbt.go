package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// Changed Block Tracking and frozen snapshot data.
//
// vSphere gives every snapshotted disk a changeId "<CBT uuid>/<sequence>"; QueryChangedDiskAreas
// answers which areas differ between an earlier changeId and a snapshot. The simulator keeps no
// block map, so at snapshot time the extension copies the disk (the copy is what the snapshot's
// disk backing points at, frozen while the VM keeps writing) and hashes every 64 KiB block under
// the new changeId. Changed areas are the blocks whose hashes differ.

const blockSize = 64 << 10

var zeroBlock = make([]byte, blockSize)

type diskID struct {
	vm  string // VirtualMachine moref value
	key int32  // device key
}

// cbtEpoch is one run of change tracking on a disk: reset (a new uuid) when tracking is turned
// off and on again, which invalidates every changeId handed out before.
type cbtEpoch struct {
	uuid string
	seq  int
}

// changeRecord is a disk's content at one snapshot, kept after the snapshot is removed so later
// snapshots can be compared with it.
type changeRecord struct {
	disk     diskID
	epoch    string
	seq      int
	capacity int64
	hashes   [][sha1.Size]byte
	nonzero  []bool
}

type frozenDisk struct {
	vm       types.ManagedObjectReference
	dsPath   string // "[ds] vm/disk-snapshot-1.vmdk", the snapshot disk's backing.fileName
	flat     string // local data file of the frozen copy
	live     string // local data file of the VM's disk it was copied from
	capacity int64
}

var changeIDPattern = regexp.MustCompile(`^52( [0-9a-f]{2}){7}-[0-9a-f]{2}( [0-9a-f]{2}){7}/[0-9]+$`)

// newCBTUUID formats a random uuid the way ESXi prints CBT ids: "52 xx xx xx xx xx xx xx-xx ...".
func newCBTUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[0] = 0x52
	parts := make([]string, 16)
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts[:8], " ") + "-" + strings.Join(parts[8:], " ")
}

func (b *backupExt) resetCBT(vm types.ManagedObjectReference) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id := range b.epochs {
		if id.vm == vm.Value {
			delete(b.epochs, id)
		}
	}
}

func (b *backupExt) nextChangeID(id diskID) (string, *cbtEpoch) {
	ep := b.epochs[id]
	if ep == nil {
		ep = &cbtEpoch{uuid: newCBTUUID()}
		b.epochs[id] = ep
	}
	ep.seq++
	return fmt.Sprintf("%s/%d", ep.uuid, ep.seq), ep
}

// snapshotBacking copies a disk backing that a snapshot freezes, giving access to its file
// name and changeId. Independent disks and physical-mode RDMs are not part of snapshots (nil).
func snapshotBacking(backing types.BaseVirtualDeviceBackingInfo) (types.BaseVirtualDeviceBackingInfo, *types.VirtualDeviceFileBackingInfo, *string) {
	independent := func(mode string) bool { return strings.HasPrefix(mode, "independent") }
	switch x := backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		if !independent(x.DiskMode) {
			c := *x
			return &c, &c.VirtualDeviceFileBackingInfo, &c.ChangeId
		}
	case *types.VirtualDiskSparseVer2BackingInfo:
		if !independent(x.DiskMode) {
			c := *x
			return &c, &c.VirtualDeviceFileBackingInfo, &c.ChangeId
		}
	case *types.VirtualDiskSeSparseBackingInfo:
		if !independent(x.DiskMode) {
			c := *x
			return &c, &c.VirtualDeviceFileBackingInfo, &c.ChangeId
		}
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		if x.CompatibilityMode != string(types.VirtualDiskCompatibilityModePhysicalMode) && !independent(x.DiskMode) {
			c := *x
			return &c, &c.VirtualDeviceFileBackingInfo, &c.ChangeId
		}
	}
	return nil, nil, nil
}

// afterSnapshot freezes the new snapshot's disks and, with tracking on, gives each its changeId.
// The simulator shares device objects between a VM and its snapshots, so the snapshot gets
// copies of its disks rather than edits of the VM's.
func (b *backupExt) afterSnapshot(vmRef, snapRef types.ManagedObjectReference) error {
	snap, ok := lookupSnapshot(snapRef)
	if !ok {
		return fmt.Errorf("no snapshot %s", snapRef.Value)
	}
	tracking, _ := cbtEnabled(vmRef)
	devices, _ := snapshotDevices(snap)

	var frozen []frozenDisk
	defer func() {
		b.mu.Lock()
		b.frozen[snapRef] = frozen // also on error, so that removal cleans up what was copied
		b.mu.Unlock()
	}()
	for i, dev := range devices {
		disk, isDisk := dev.(*types.VirtualDisk)
		if !isDisk {
			continue
		}
		backing, file, changeID := snapshotBacking(disk.Backing)
		if backing == nil {
			continue
		}
		live, err := localPath(file.FileName)
		if err != nil {
			return err
		}
		frozenName := strings.TrimSuffix(file.FileName, ".vmdk") + "-" + snapRef.Value + ".vmdk"
		frozenLocal, err := localPath(frozenName)
		if err != nil {
			return err
		}
		capacity := diskCapacity(disk)
		rec, err := freeze(flatPath(live), flatPath(frozenLocal), capacity)
		if err != nil {
			return err
		}
		frozen = append(frozen, frozenDisk{
			vm: vmRef, dsPath: frozenName, flat: flatPath(frozenLocal), live: flatPath(live), capacity: capacity,
		})
		// An empty descriptor beside the data, as the simulator makes for its own disks.
		if err := os.WriteFile(frozenLocal, nil, 0o600); err != nil {
			return err
		}
		file.FileName = frozenName
		if tracking {
			rec.disk = diskID{vm: vmRef.Value, key: disk.Key}
			b.mu.Lock()
			id, ep := b.nextChangeID(rec.disk)
			rec.epoch, rec.seq = ep.uuid, ep.seq
			b.changes[id] = rec
			b.mu.Unlock()
			*changeID = id
		}
		copied := *disk
		copied.Backing = backing
		devices[i] = &copied
	}

	simulator.Map.WithLock(snap, func() {
		snap.Config.Hardware.Device = devices
	})
	return nil
}

// freeze copies a flat disk file (sparse: zero blocks are skipped) and hashes its blocks. Past
// the end of the source, and for a missing source, the disk reads as zeros.
func freeze(src, dst string, capacity int64) (*changeRecord, error) {
	in, err := os.Open(src)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	if in != nil {
		defer in.Close()
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	if err := out.Truncate(capacity); err != nil {
		return nil, err
	}
	blocks := int((capacity + blockSize - 1) / blockSize)
	rec := &changeRecord{capacity: capacity, hashes: make([][sha1.Size]byte, blocks), nonzero: make([]bool, blocks)}
	buf := make([]byte, blockSize)
	for i := 0; i < blocks; i++ {
		off := int64(i) * blockSize
		chunk := buf[:min64(blockSize, capacity-off)]
		if err := readPadded(in, chunk, off); err != nil {
			return nil, err
		}
		rec.hashes[i] = sha1.Sum(chunk)
		if !bytes.Equal(chunk, zeroBlock[:len(chunk)]) {
			rec.nonzero[i] = true
			if _, err := out.WriteAt(chunk, off); err != nil {
				return nil, err
			}
		}
	}
	return rec, out.Close()
}

// readPadded fills p from f at off, with zeros past the end of the file (or for no file).
func readPadded(f *os.File, p []byte, off int64) error {
	n := 0
	if f != nil {
		var err error
		n, err = f.ReadAt(p, off)
		if err != nil && err != io.EOF {
			return err
		}
	}
	copy(p[n:], zeroBlock)
	return nil
}

func min64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

// queryChangedDiskAreas answers like ESXi: the areas of the disk, as of the snapshot, that
// changed since changeId ("*": every allocated area), from startOffset and covering at most
// b.window bytes; callers continue at startOffset+length until the capacity is reached.
func (b *backupExt) queryChangedDiskAreas(req *types.QueryChangedDiskAreas) result {
	if req.Snapshot == nil {
		return invalidArgument("snapshot")
	}
	snap, ok := lookupSnapshot(*req.Snapshot)
	if !ok {
		return fail(&types.ManagedObjectNotFound{Obj: *req.Snapshot}, "The object %s has already been deleted or has not been completely created", req.Snapshot.Value)
	}
	devices, vmRef := snapshotDevices(snap)
	if vmRef != req.This {
		return invalidArgument("snapshot")
	}
	var disk *types.VirtualDisk
	for _, dev := range devices {
		if d, isDisk := dev.(*types.VirtualDisk); isDisk && d.Key == req.DeviceKey {
			disk = d
		}
	}
	if disk == nil {
		return invalidArgument("deviceKey")
	}
	_, _, current := snapshotBacking(disk.Backing)
	b.mu.Lock()
	defer b.mu.Unlock()
	var cur *changeRecord
	if current != nil {
		cur = b.changes[*current]
	}
	if cur == nil {
		// What ESXi answers for a disk without change tracking (CBT off when the snapshot was
		// taken, an independent disk, a physical-mode RDM).
		name := diskFileName(disk)
		return fail(&types.FileFault{File: name}, "Error caused by file %s", name)
	}
	if req.StartOffset < 0 || req.StartOffset >= cur.capacity {
		return invalidArgument("startOffset")
	}
	changed := func(i int) bool { return cur.nonzero[i] }
	if req.ChangeId != "*" {
		base := b.changes[req.ChangeId]
		if !changeIDPattern.MatchString(req.ChangeId) || base == nil || base.disk != cur.disk ||
			base.epoch != cur.epoch || base.seq > cur.seq {
			// A changeId from before a CBT reset, of another disk, or made up.
			return invalidArgument("changeId")
		}
		changed = func(i int) bool { return base.hashes[i] != cur.hashes[i] }
	}

	start := req.StartOffset
	end := min64(cur.capacity, start+b.window)
	info := types.DiskChangeInfo{StartOffset: start, Length: end - start}
	for i := int(start / blockSize); int64(i)*blockSize < end; i++ {
		if !changed(i) {
			continue
		}
		from := maxInt64(int64(i)*blockSize, start)
		to := min64(int64(i+1)*blockSize, end)
		if n := len(info.ChangedArea); n > 0 && info.ChangedArea[n-1].Start+info.ChangedArea[n-1].Length == from {
			info.ChangedArea[n-1].Length += to - from
			continue
		}
		info.ChangedArea = append(info.ChangedArea, types.DiskChangeExtent{Start: from, Length: to - from})
	}
	return reply("QueryChangedDiskAreasResponse", types.QueryChangedDiskAreasResponse{Returnval: info})
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
