package main

import (
	"log"
	"os"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// Life of the frozen snapshot copies after their snapshot was taken: deleted with the snapshot,
// copied back by a revert, and kept when still hot-added to another VM (a backup proxy that
// crashed), which leaves the VM needing consolidation as vSphere does.

// collectSnapshots deletes the frozen copies of snapshots that no longer exist.
func (b *backupExt) collectSnapshots() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for snapRef, disks := range b.frozen {
		if len(disks) > 0 && snapshotInTree(disks[0].vm, snapRef) {
			continue
		}
		delete(b.frozen, snapRef)
		for _, d := range disks {
			if _, busy := attachedTo(d.dsPath, d.vm); busy {
				b.leftover = append(b.leftover, d)
				setConsolidationNeeded(d.vm, true)
				continue
			}
			removeDisk(d)
		}
	}
}

func removeDisk(d frozenDisk) {
	descriptor, err := localPath(d.dsPath)
	if err == nil {
		_ = os.Remove(descriptor)
	}
	_ = os.Remove(d.flat)
}

func setConsolidationNeeded(ref types.ManagedObjectReference, needed bool) {
	if vm, ok := lookupVM(ref); ok {
		simulator.Map.WithLock(vm, func() {
			vm.Runtime.ConsolidationNeeded = types.NewBool(needed)
			vm.Summary.Runtime.ConsolidationNeeded = types.NewBool(needed)
		})
	}
}

// snapshotInTree tells whether the VM still lists the snapshot (removing a snapshot with its
// children leaves the children's objects behind, but not in the tree).
func snapshotInTree(vmRef, snapRef types.ManagedObjectReference) bool {
	vm, ok := lookupVM(vmRef)
	if !ok {
		return false
	}
	found := false
	var walk func([]types.VirtualMachineSnapshotTree)
	walk = func(trees []types.VirtualMachineSnapshotTree) {
		for _, t := range trees {
			found = found || t.Snapshot == snapRef
			walk(t.ChildSnapshotList)
		}
	}
	simulator.Map.WithLock(vm, func() {
		if vm.Snapshot != nil {
			walk(vm.Snapshot.RootSnapshotList)
		}
	})
	return found
}

// revert copies a snapshot's frozen data back into its VM's disks.
func (b *backupExt) revert(snapRef types.ManagedObjectReference) error {
	b.mu.Lock()
	disks := b.frozen[snapRef]
	b.mu.Unlock()
	for _, d := range disks {
		if _, err := freeze(d.flat, d.live, d.capacity); err != nil {
			return err
		}
	}
	return nil
}

// consolidate is ConsolidateVMDisks_Task: it deletes the VM's leftover snapshot copies, or fails
// with FileLocked while one is still attached to another VM.
func (b *backupExt) consolidate(vmRef types.ManagedObjectReference) result {
	vm, ok := lookupVM(vmRef)
	if !ok {
		return fail(&types.ManagedObjectNotFound{Obj: vmRef}, "The object %s has already been deleted", vmRef.Value)
	}
	task := simulator.CreateTask(vm, "consolidateVMDisks", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		b.mu.Lock()
		defer b.mu.Unlock()
		var keep []frozenDisk
		var locked string
		for _, d := range b.leftover {
			if d.vm != vmRef {
				keep = append(keep, d)
			} else if _, busy := attachedTo(d.dsPath, d.vm); busy {
				keep = append(keep, d)
				locked = d.dsPath
			} else {
				removeDisk(d)
			}
		}
		b.leftover = keep
		if locked != "" {
			log.Printf("backup-ext: consolidate %s: %s still attached elsewhere", vmRef.Value, locked)
			return nil, &types.FileLocked{FileFault: types.FileFault{File: locked}}
		}
		setConsolidationNeeded(vmRef, false)
		return nil, nil
	})
	return reply("ConsolidateVMDisks_TaskResponse", types.ConsolidateVMDisks_TaskResponse{Returnval: task.Run()})
}
