"""Unit tests of scripts/ci/canary.py's parts that no running system
exercises here: the split it writes for every shape of upstream, the TOML
it writes back, the manifests it makes, and its ConfigMap bookkeeping
against a stand-in kubectl (the rollout itself is tested with real
processes in tests/tests/canary.rs and against a real Prometheus in
scripts/check/dashboard-queries.sh).

    python3 -m unittest discover -s scripts/ci -p 'test_*.py'
"""

import json
import os
import subprocess
import sys
import tempfile
import tomllib
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import canary  # noqa: E402  (the module under test, beside this file)

TRAFFIC = (ROOT / "k8s" / "base" / "gateway" / "traffic.toml").read_text()

# A kubectl that keeps one ConfigMap in a JSON file and answers `get
# --output json` and `patch --type merge` (RFC 7386) on it, as kubectl does.
FAKE_KUBECTL = r'''#!/usr/bin/env python3
import json, os, sys
state = os.environ["FAKE_KUBECTL_STATE"]
args = sys.argv[1:]
with open(state) as src:
    obj = json.load(src)
def merge(target, patch):
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value
if args[0] == "get":
    print(json.dumps(obj))
elif args[0] == "patch":
    merge(obj, json.loads(args[args.index("--patch") + 1]))
    with open(state, "w") as out:
        json.dump(obj, out)
else:
    sys.exit(f"fake kubectl: {args}")
'''


class Split(unittest.TestCase):
    def test_a_dns_upstream_splits_into_its_stable_name_and_the_canary_service(self):
        document = tomllib.loads(canary.split_text(TRAFFIC, "user", 25))
        upstreams = document["upstreams"]
        self.assertEqual(upstreams["user"], {"endpoints": [], "split": {"user-stable": 75, "user-canary": 25}})
        self.assertEqual(upstreams["user-stable"]["dns"]["name"], "user")
        self.assertEqual(upstreams["user-canary"]["dns"]["name"], "user-canary")
        self.assertEqual(upstreams["user-canary"]["dns"]["port"], upstreams["user-stable"]["dns"]["port"])
        # The other upstream is untouched.
        self.assertEqual(upstreams["auth"], tomllib.loads(TRAFFIC)["upstreams"]["auth"])

    def test_a_listed_upstream_needs_the_canary_endpoints(self):
        listed = '[upstreams.user]\nendpoints = ["http://10.0.0.1:8081"]\n'
        with self.assertRaisesRegex(canary.Usage, "--canary-endpoints"):
            canary.split_text(listed, "user", 5)
        document = tomllib.loads(canary.split_text(listed, "user", 5, ["http://10.0.9.1:8081"]))
        self.assertEqual(document["upstreams"]["user-canary"]["endpoints"], ["http://10.0.9.1:8081"])
        self.assertEqual(document["upstreams"]["user-stable"]["endpoints"], ["http://10.0.0.1:8081"])

    def test_a_missing_upstream_a_split_one_and_a_bad_weight_are_refused(self):
        with self.assertRaisesRegex(canary.Usage, "no \\[upstreams.billing\\]"):
            canary.split_text(TRAFFIC, "billing", 5)
        already = canary.split_text(TRAFFIC, "user", 5)
        with self.assertRaisesRegex(canary.Usage, "split already"):
            canary.split_text(already, "user", 25)
        with self.assertRaisesRegex(canary.Usage, "percentage"):
            canary.split_text(TRAFFIC, "user", 101)


class TomlOut(unittest.TestCase):
    def test_what_is_written_reads_back_the_same(self):
        # The gateway's full defaults: nested tables, arrays of tables,
        # inline tables, lists, strings with quotes and escapes.
        defaults = (ROOT / "services" / "gateway" / "config" / "defaults.toml").read_text()
        document = tomllib.loads(defaults)
        document["routes"][0]["headers"] = {"x-odd key": 'say "hi"\\there'}
        self.assertEqual(tomllib.loads(canary.toml_dump(document)), document)


class Manifests(unittest.TestCase):
    def test_the_canary_is_the_stable_deployment_renamed_on_its_own_track_and_image(self):
        deployment = {
            "kind": "Deployment",
            "metadata": {"name": "user", "labels": {"app.kubernetes.io/name": "user"}},
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": "user", "portico.dev/track": "stable"}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "user", "portico.dev/track": "stable"}},
                    "spec": {
                        "initContainers": [{"name": "migrate", "image": "portico-user:1"}],
                        "containers": [{"name": "user", "image": "portico-user:1"},
                                       {"name": "sidecar", "image": "other:1"}],
                    },
                },
            },
        }
        service = {"kind": "Service", "metadata": {"name": "user"},
                   "spec": {"selector": {"app.kubernetes.io/name": "user", "portico.dev/track": "stable"}}}
        made = subprocess.run(
            [sys.executable, str(HERE / "canary.py"), "manifests", "user", "portico-user:2", "--replicas", "2"],
            input=json.dumps([deployment, service]), capture_output=True, text=True, check=True)
        items = {o["kind"]: o for o in json.loads(made.stdout)["items"]}
        canary_deployment, canary_service = items["Deployment"], items["Service"]
        self.assertEqual(canary_deployment["metadata"]["name"], "user-canary")
        self.assertEqual(canary_deployment["spec"]["replicas"], 2)
        self.assertEqual(canary_deployment["spec"]["selector"]["matchLabels"]["portico.dev/track"], "canary")
        pod = canary_deployment["spec"]["template"]
        self.assertEqual(pod["metadata"]["labels"]["portico.dev/track"], "canary")
        self.assertEqual([c["image"] for c in pod["spec"]["containers"]], ["portico-user:2", "other:1"])
        self.assertEqual(pod["spec"]["initContainers"][0]["image"], "portico-user:2")
        self.assertEqual(canary_service["metadata"]["name"], "user-canary")
        self.assertEqual(canary_service["spec"]["selector"]["portico.dev/track"], "canary")


class ConfigMapBookkeeping(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        root = Path(self.dir.name)
        kubectl = root / "kubectl"
        kubectl.write_text(FAKE_KUBECTL)
        kubectl.chmod(0o755)
        self.state = root / "configmap.json"
        self.state.write_text(json.dumps({"metadata": {"name": "gateway-traffic"},
                                          "data": {"traffic.toml": TRAFFIC}}))
        os.environ["KUBECTL"] = str(kubectl)
        os.environ["FAKE_KUBECTL_STATE"] = str(self.state)
        self.store = canary.ConfigMapStore("gateway-traffic", "portico")

    def tearDown(self):
        self.dir.cleanup()

    def test_a_canary_marks_the_configmap_and_restoring_puts_back_the_text_and_removes_the_marks(self):
        self.assertIsNone(self.store.saved())
        self.store.begin(TRAFFIC, "user")
        self.store.write(canary.split_text(TRAFFIC, "user", 50))
        annotations = json.loads(self.state.read_text())["metadata"]["annotations"]
        self.assertEqual(annotations[canary.SERVICE_ANNOTATION], "user")
        self.assertEqual(self.store.saved(), TRAFFIC)
        self.assertIn("user-canary", self.store.read())

        self.store.finish()

        restored = json.loads(self.state.read_text())
        self.assertEqual(restored["data"]["traffic.toml"], TRAFFIC)
        self.assertEqual(restored["metadata"].get("annotations") or {}, {})

    def test_restoring_without_a_canary_is_refused(self):
        with self.assertRaisesRegex(canary.Usage, "no canary in progress"):
            self.store.finish()


if __name__ == "__main__":
    unittest.main()
