// Command kubedl-compat runs KubeDL v0.5.0's own storage code (its mysql
// object backend, dmo models and converters) against a MySQL/MariaDB
// database named by KubeDL's variables (MYSQL_HOST, MYSQL_PORT,
// MYSQL_DB_NAME, MYSQL_USER, MYSQL_PASSWORD). kubesink's tests use it to
// write rows the way KubeDL does and to read rows (KubeDL's or kubesink's)
// the way KubeDL's console does.
//
//	kubedl-compat save WATCH.json        replay a watch stream as KubeDL's persist controllers do
//	kubedl-compat save-racing WATCH.json the same, but the first two versions of every job and
//	                                     pod are both inserted (the find-then-create race)
//	kubedl-compat read                   print what the read API returns (JSON)
//	kubedl-compat console                stop and delete every job, stop every pod (as the
//	                                     console does), then print what the read API returns
//
// Run with TZ=UTC: the backend's DSN uses loc=Local.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jinzhu/gorm"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	trainingv1alpha1 "github.com/alibaba/kubedl/apis/training/v1alpha1"
	"github.com/alibaba/kubedl/pkg/storage/backends"
	"github.com/alibaba/kubedl/pkg/storage/backends/objects/mysql"
	"github.com/alibaba/kubedl/pkg/storage/dmo"
	"github.com/alibaba/kubedl/pkg/storage/dmo/converters"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: kubedl-compat save|save-racing WATCH.json | read | console")
	}
	backend := mysql.NewMysqlBackendService()
	if err := backend.Initialize(); err != nil {
		fail("initializing KubeDL's mysql backend: %v", err)
	}
	defer backend.Close()
	switch os.Args[1] {
	case "save", "save-racing":
		if len(os.Args) != 3 {
			fail("usage: kubedl-compat %s WATCH.json", os.Args[1])
		}
		save(backend, os.Args[2], os.Args[1] == "save-racing")
	case "read":
		out(read(backend))
	case "console":
		out(console(backend))
	default:
		fail("unknown command %q", os.Args[1])
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kubedl-compat: "+format+"\n", args...)
	os.Exit(1)
}

func out(v interface{}) {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fail("encoding output: %v", err)
	}
}

type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

type typeMeta struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
}

// The container KubeDL's pod persist controller takes the image and status
// from (its matchDefaultContainerName).
func defaultContainer(ownerKind string) string {
	switch ownerKind {
	case trainingv1alpha1.TFJobKind:
		return trainingv1alpha1.TFJobDefaultContainerName
	case trainingv1alpha1.PyTorchJobKind:
		return trainingv1alpha1.PyTorchJobDefaultContainerName
	}
	return ""
}

func decodeJob(kind string, raw []byte) metav1.Object {
	var obj metav1.Object
	var err error
	switch kind {
	case trainingv1alpha1.TFJobKind:
		j := &trainingv1alpha1.TFJob{}
		err = json.Unmarshal(raw, j)
		obj = j
	default:
		j := &trainingv1alpha1.PyTorchJob{}
		err = json.Unmarshal(raw, j)
		obj = j
	}
	if err != nil {
		fail("decoding a %s: %v", kind, err)
	}
	return obj
}

// One object of the stream, decoded.
type item struct {
	job  metav1.Object
	kind string
	pod  *corev1.Pod
}

func (it item) uid() string {
	if it.pod != nil {
		return string(it.pod.UID)
	}
	return string(it.job.GetUID())
}

type saver struct {
	backend backends.ObjectStorageBackend
	// Racing: a second connection inserting as a racing SaveJob/SavePod
	// would, and the first version of each uid held until its second.
	db   *gorm.DB
	held map[string]item
	done map[string]bool
}

// save replays a `kubectl get --watch --output-watch-events -o json` stream
// as KubeDL's persist controllers do: TFJobs and PyTorchJobs through
// SaveJob, and on deletion StopJob then DeleteJob; pods of KubeDL's jobs
// through SavePod, and on deletion StopPod with the arguments the v0.5.0
// pod controller passes (name and namespace swapped, so it finds no row).
// Other objects (batch/v1 Jobs and their pods, events) are not KubeDL's.
//
// Racing: for each uid the first two versions are both inserted (two
// SaveJob/SavePod calls that both found no row and both created one); the
// later ones update the row SaveJob's First() finds.
func save(backend backends.ObjectStorageBackend, path string, racing bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	s := &saver{backend: backend, held: map[string]item{}, done: map[string]bool{}}
	if racing {
		src, _, err := mysql.GetMysqlDBSource()
		if err != nil {
			fail("%v", err)
		}
		if s.db, err = gorm.Open("mysql", src); err != nil {
			fail("opening a second connection: %v", err)
		}
		defer s.db.Close()
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		var ev watchEvent
		if err := dec.Decode(&ev); err == io.EOF {
			break
		} else if err != nil {
			fail("%s: %v", path, err)
		}
		var tm typeMeta
		if err := json.Unmarshal(ev.Object, &tm); err != nil {
			fail("%s: %v", path, err)
		}
		var it item
		switch {
		case tm.Kind == trainingv1alpha1.TFJobKind || tm.Kind == trainingv1alpha1.PyTorchJobKind:
			it = item{job: decodeJob(tm.Kind, ev.Object), kind: tm.Kind}
		case tm.Kind == "Pod" && tm.APIVersion == "v1":
			pod := &corev1.Pod{}
			if err := json.Unmarshal(ev.Object, pod); err != nil {
				fail("decoding a pod: %v", err)
			}
			// KubeDL's pod controller only sees pods of its jobs.
			if _, err := converters.ConvertPodToDMOPod(pod, "", ""); errors.Is(err, converters.ErrNoDependentOwner) || errors.Is(err, converters.ErrNoReplicaTypeLabel) {
				continue
			}
			it = item{pod: pod}
		default:
			continue
		}
		if ev.Type == "DELETED" {
			s.flush(it.uid())
			s.remove(it)
			continue
		}
		if s.db != nil && !s.done[it.uid()] {
			if first, ok := s.held[it.uid()]; ok {
				s.race(first, it)
			} else {
				s.held[it.uid()] = it
			}
			continue
		}
		s.store(it)
	}
	for uid := range s.held {
		s.flush(uid)
	}
}

func (s *saver) flush(uid string) {
	if it, ok := s.held[uid]; ok {
		delete(s.held, uid)
		s.done[uid] = true
		s.store(it)
	}
}

func (s *saver) store(it item) {
	if it.pod != nil {
		owner := metav1.GetControllerOf(it.pod)
		kind := ""
		if owner != nil {
			kind = owner.Kind
		}
		if err := s.backend.SavePod(it.pod, defaultContainer(kind), ""); err != nil {
			fail("SavePod %s/%s: %v", it.pod.Namespace, it.pod.Name, err)
		}
		return
	}
	kind, specs, status, err := converters.ExtractTypedJobInfos(it.job)
	if err != nil {
		fail("%v", err)
	}
	if err := s.backend.SaveJob(it.job, kind, specs, &status, ""); err != nil {
		fail("SaveJob %s/%s: %v", it.job.GetNamespace(), it.job.GetName(), err)
	}
}

// race inserts both versions, as two SaveJob/SavePod calls that each found
// no row would (createNewJob/createNewPod: convert, then Create).
func (s *saver) race(a, b item) {
	delete(s.held, a.uid())
	s.done[a.uid()] = true
	for _, it := range []item{a, b} {
		var row interface{}
		var err error
		if it.pod != nil {
			owner := metav1.GetControllerOf(it.pod)
			row, err = converters.ConvertPodToDMOPod(it.pod, defaultContainer(owner.Kind), "")
		} else {
			kind, specs, status, e := converters.ExtractTypedJobInfos(it.job)
			if e != nil {
				fail("%v", e)
			}
			row, err = converters.ConvertJobToDMOJob(it.job, kind, specs, &status, "")
		}
		if err != nil {
			fail("converting %s: %v", it.uid(), err)
		}
		if err := s.db.Create(row).Error; err != nil {
			fail("inserting %s: %v", it.uid(), err)
		}
	}
}

func (s *saver) remove(it item) {
	if it.pod != nil {
		// pod_persist_controller.go: StopPod(name, req.Namespace, id).
		err := s.backend.StopPod(it.pod.Name, it.pod.Namespace, string(it.pod.UID))
		if err != nil && !gorm.IsRecordNotFoundError(err) {
			fail("StopPod: %v", err)
		}
		return
	}
	ns, name, uid := it.job.GetNamespace(), it.job.GetName(), string(it.job.GetUID())
	// job_persist_controller.go: StopJob, then DeleteJob.
	if err := s.backend.StopJob(ns, name, uid, it.kind, ""); err != nil {
		fail("StopJob: %v", err)
	}
	if err := s.backend.DeleteJob(ns, name, uid, it.kind, ""); err != nil {
		fail("DeleteJob: %v", err)
	}
}

// A ListJobs result.
type listed struct {
	Count int        `json:"count"`
	Jobs  []*dmo.Job `json:"jobs"`
}

// What the read API returns.
type readOut struct {
	Lists map[string]listed     `json:"lists"`
	Get   map[string]*dmo.Job   `json:"get"`
	Pods  map[string][]*dmo.Pod `json:"pods"`
	Errs  map[string]string     `json:"errors,omitempty"`
}

func day(d int, h, m, sec int) time.Time {
	return time.Date(2026, 3, d, h, m, sec, 0, time.UTC)
}

// read drives ListJobs (the console's filters and paging), GetJob and
// ListPods over every job the unfiltered list returns.
func read(backend backends.ObjectStorageBackend) readOut {
	o := readOut{Lists: map[string]listed{}, Get: map[string]*dmo.Job{}, Pods: map[string][]*dmo.Pod{}, Errs: map[string]string{}}
	zero, one := 0, 1
	base := func() *backends.Query {
		return &backends.Query{StartTime: day(1, 0, 0, 0), EndTime: day(3, 0, 0, 0)}
	}
	queries := map[string]func(q *backends.Query){
		"all":                   func(q *backends.Query) {},
		"created_after_0800_10": func(q *backends.Query) { q.StartTime = day(2, 8, 0, 10) },
		"status_succeeded":      func(q *backends.Query) { q.Status = "Succeeded" },
		"status_stopped":        func(q *backends.Query) { q.Status = "Stopped" },
		"name_like_mni":         func(q *backends.Query) { q.Name = "mni" },
		"namespace_like_m":      func(q *backends.Query) { q.Namespace = "m" },
		"region_cn_hangzhou":    func(q *backends.Query) { q.Region = "cn-hangzhou" },
		"not_deleted":           func(q *backends.Query) { q.IsDel = &zero },
		"deleted":               func(q *backends.Query) { q.IsDel = &one },
		"page_1_of_size_1":      func(q *backends.Query) { q.Pagination = &backends.QueryPagination{PageNum: 1, PageSize: 1} },
		"page_2_of_size_1":      func(q *backends.Query) { q.Pagination = &backends.QueryPagination{PageNum: 2, PageSize: 1} },
	}
	for name, set := range queries {
		q := base()
		set(q)
		jobs, err := backend.ListJobs(q)
		if err != nil {
			o.Errs["list "+name] = err.Error()
			continue
		}
		n := len(jobs)
		if q.Pagination != nil {
			n = q.Pagination.Count
		}
		o.Lists[name] = listed{Count: n, Jobs: jobs}
	}
	for _, j := range o.Lists["all"].Jobs {
		q := base()
		q.JobID = j.JobID
		jobs, err := backend.ListJobs(q)
		if err != nil {
			o.Errs["list job_id "+j.JobID] = err.Error()
		} else {
			o.Lists["job_id "+j.JobID] = listed{Count: len(jobs), Jobs: jobs}
		}
		got, err := backend.GetJob(j.Namespace, j.Name, j.JobID, j.Kind, "")
		if err != nil {
			o.Errs["get "+j.JobID] = err.Error()
		} else {
			o.Get[j.JobID] = got
		}
		pods, err := backend.ListPods(j.Namespace, "", j.JobID)
		if err != nil {
			o.Errs["pods "+j.JobID] = err.Error()
		} else {
			o.Pods[j.JobID] = pods
		}
	}
	return o
}

type consoleOut struct {
	Errs  map[string]string `json:"errors"`
	After readOut           `json:"after"`
}

// console stops and deletes every job and stops every pod (the console's
// actions; StopPod with its arguments in order), then reads again.
func console(backend backends.ObjectStorageBackend) consoleOut {
	o := consoleOut{Errs: map[string]string{}}
	before := read(backend)
	for _, j := range before.Lists["all"].Jobs {
		for _, p := range before.Pods[j.JobID] {
			if err := backend.StopPod(p.Namespace, p.Name, p.PodID); err != nil {
				o.Errs["stop pod "+p.PodID] = err.Error()
			}
		}
		if err := backend.StopJob(j.Namespace, j.Name, j.JobID, j.Kind, ""); err != nil {
			o.Errs["stop job "+j.JobID] = err.Error()
		}
		if err := backend.DeleteJob(j.Namespace, j.Name, j.JobID, j.Kind, ""); err != nil {
			o.Errs["delete job "+j.JobID] = err.Error()
		}
	}
	o.After = read(backend)
	return o
}
