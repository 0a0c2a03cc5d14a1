package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Store is the record in an etcd datastore.
type Store struct{ KV clientv3.KV }

// ErrNotFound: the datastore has no record (a cluster made before
// servers kept one, or the record not yet written by the first server).
var ErrNotFound = errors.New("no bootstrap data in the datastore")

// ErrOtherToken: the datastore has a record, but not for this token: the
// cluster's token was rotated (k3s token rotate) and this server still
// has the old one.
var ErrOtherToken = errors.New("bootstrap data already found and encrypted with different token: the cluster's token was changed (k3s token rotate); start this server with the cluster's current token (token: in its config, or K3S_TOKEN) — if it has it already and was down when the token changed, start it once with its old token, so that its datastore catches up, then with the new one")

// get is the record for password and its revision (0: none).
func (s Store) get(ctx context.Context, password string) (Data, int64, error) {
	resp, err := s.KV.Get(ctx, Key(password))
	if err != nil {
		return nil, 0, err
	}
	if len(resp.Kvs) == 0 {
		others, err := s.KV.Get(ctx, KeyPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
		if err != nil {
			return nil, 0, err
		}
		if len(others.Kvs) > 0 {
			return nil, 0, ErrOtherToken
		}
		return nil, 0, ErrNotFound
	}
	d, err := Open(password, resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, err
	}
	return d, resp.Kvs[0].ModRevision, nil
}

// Load reads the record for password.
func (s Store) Load(ctx context.Context, password string) (Data, error) {
	d, _, err := s.get(ctx, password)
	return d, err
}

// Sync gives the record what this server changed since they last agreed
// (a rotated token's passwd, a new encryption config; everything, when
// there is no record yet). Its Plan's Take lists the files another server
// changed since (this one takes them at its next start), Conflicts those
// changed on both sides (left alone on both).
func (s Store) Sync(ctx context.Context, password, dataDir string) (Plan, error) {
	for range 5 {
		disk, err := ReadDisk(dataDir)
		if err != nil {
			return Plan{}, err
		}
		st, err := LoadState(dataDir)
		if err != nil {
			return Plan{}, err
		}
		stored, rev, err := s.get(ctx, password)
		if errors.Is(err, ErrNotFound) {
			stored, err = Data{}, nil
		}
		if err != nil {
			return Plan{}, err
		}
		p := Compare(disk, stored, st)
		if len(p.Give) > 0 {
			for _, rel := range p.Give {
				stored[rel] = disk[rel]
			}
			ok, err := s.put(ctx, password, stored, rev)
			if err != nil {
				return Plan{}, err
			}
			if !ok {
				continue // written by another server meanwhile: read it again
			}
		}
		agreed := Data{}
		for rel, f := range stored {
			if d, ok := disk[rel]; ok && bytes.Equal(d.Content, f.Content) {
				agreed[rel] = f
			}
		}
		return p, Agree(dataDir, agreed)
	}
	return Plan{}, errors.New("bootstrap data: the datastore's record kept changing while this server wrote it")
}

// unchanged is the condition that the record at key is still at
// revision rev; rev 0 (none was read) means no record at all, under any
// token: one made meanwhile by another server, or a token rotated
// meanwhile, must not be shadowed by a second.
func unchanged(key string, rev int64) clientv3.Cmp {
	if rev == 0 {
		return clientv3.Compare(clientv3.CreateRevision(KeyPrefix), "=", 0).WithPrefix()
	}
	return clientv3.Compare(clientv3.ModRevision(key), "=", rev)
}

// put writes d under password's key if the record is still at revision
// rev (0: absent).
func (s Store) put(ctx context.Context, password string, d Data, rev int64) (bool, error) {
	sealed, err := Seal(password, d)
	if err != nil {
		return false, err
	}
	key := Key(password)
	resp, err := s.KV.Txn(ctx).If(unchanged(key, rev)).Then(clientv3.OpPut(key, string(sealed))).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// Put merges files into the record for password (changes not on this
// server's disk yet: CA files rotate-ca staged for the next start).
func (s Store) Put(ctx context.Context, password string, files Data) error {
	if err := files.Check(); err != nil {
		return err
	}
	for range 5 {
		stored, rev, err := s.get(ctx, password)
		if errors.Is(err, ErrNotFound) {
			stored, err = Data{}, nil
		}
		if err != nil {
			return err
		}
		for rel, f := range files {
			stored[rel] = f
		}
		ok, err := s.put(ctx, password, stored, rev)
		if err != nil || ok {
			return err
		}
	}
	return errors.New("bootstrap data: the datastore's record kept changing while this server wrote it")
}

// Rekey moves the record from the old token's password to the new one's
// (k3s token rotate) with changes (the new passwd) merged in, in one
// transaction: the old token no longer opens it.
func (s Store) Rekey(ctx context.Context, oldPassword, newPassword string, changes Data) error {
	if err := changes.Check(); err != nil {
		return err
	}
	if oldPassword == newPassword {
		return s.Put(ctx, newPassword, changes)
	}
	stored, rev, err := s.get(ctx, oldPassword)
	switch {
	case errors.Is(err, ErrNotFound):
		stored = Data{}
	case err != nil:
		return fmt.Errorf("reading the record of the old token: %w", err)
	}
	for rel, f := range changes {
		stored[rel] = f
	}
	sealed, err := Seal(newPassword, stored)
	if err != nil {
		return err
	}
	oldKey, newKey := Key(oldPassword), Key(newPassword)
	resp, err := s.KV.Txn(ctx).If(unchanged(oldKey, rev)).
		Then(clientv3.OpPut(newKey, string(sealed)), clientv3.OpDelete(oldKey)).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return errors.New("bootstrap data: the record changed while the token was rotated; rotate again")
	}
	return nil
}
