"""The simulator seen through Zenlayer's own Python SDK (zenlayercloud-sdk-python),
a client nobody here wrote: it signs, sends and reads exactly as it does against
Zenlayer. Usage: simulator_conformance.py HOST:PORT ACCESS_KEY_ID ACCESS_KEY_PASSWORD.
The simulator must take a few seconds to finish a release, as Zenlayer does.
Both VM API versions' clients are used, each sending its own X-ZC-Version.
Exits non-zero, saying what differed, if the simulator answers in a way the SDK
does not expect of Zenlayer."""
import sys
import time

from zenlayercloud.common.config import Config
from zenlayercloud.common.credential import Credential
from zenlayercloud.common.excpetion.zenlayer_cloud_sdk_exception import ZenlayerCloudSdkException
from zenlayercloud.vm import v20230313, v20260401
from zenlayercloud.vm.v20230313 import vm_client as client_20230313
from zenlayercloud.vm.v20260401 import vm_client as client_20260401

VERSIONS = {
    "2023-03-13": (v20230313.models, client_20230313.VmClient),
    "2026-04-01": (v20260401.models, client_20260401.VmClient),
}

# How long a release may take to finish here before the check gives up.
RELEASE_DEADLINE_SECONDS = 30


class Vm:
    """One SDK client of one API version, with the calls the gateway makes."""

    def __init__(self, version, domain, key_id, password):
        self.models, client = VERSIONS[version]
        config = Config(scheme="http", domain=domain, request_timeout=10, rate_limit_max_retries=0)
        self.client = client(Credential(key_id, password), config)

    def describe(self, disk_id):
        request = self.models.DescribeDisksRequest()
        request.diskIds = [disk_id]
        return self.client.DescribeDisks(request)

    def describe_tagged(self, key):
        request = self.models.DescribeDisksRequest()
        request.tagKeys = [key]
        return self.client.DescribeDisks(request)

    def release(self, disk_id):
        request = self.models.ReleaseDiskRequest()
        request.diskId = disk_id
        return self.client.ReleaseDisk(request)

    def terminate(self, disk_id):
        request = self.models.TerminateDiskRequest()
        request.diskId = disk_id
        return self.client.TerminateDisk(request)


def expect_error(code, call):
    try:
        call()
    except ZenlayerCloudSdkException as error:
        assert error.code == code, f"expected {code}, got {error.code}: {error.message}"
        assert error.request_id, f"{code} carries no requestId"
        return
    raise AssertionError(f"expected {code}, the call succeeded")


def status(vm, disk_id):
    listed = vm.describe(disk_id)
    return listed.dataSet[0].diskStatus if listed.totalCount else None


def released_as_zenlayer_releases(vm, disk_id):
    """Accepted, then DELETING, then no longer listed; released again: not found."""
    released = vm.release(disk_id)
    assert released.requestId, "ReleaseDisk answers a requestId"
    assert status(vm, disk_id) == "DELETING", "an accepted release shows DELETING first"
    deadline = time.monotonic() + RELEASE_DEADLINE_SECONDS
    while status(vm, disk_id) is not None:
        assert time.monotonic() < deadline, f"{disk_id} still listed {RELEASE_DEADLINE_SECONDS} s after its release"
        time.sleep(0.2)
    expect_error("INVALID_DISK_NOT_FOUND", lambda: vm.release(disk_id))


def main():
    domain, key_id, password = sys.argv[1:4]
    vm = Vm("2023-03-13", domain, key_id, password)

    listed = vm.describe("disk-recycled-data")
    assert listed.requestId, "DescribeDisks carries a requestId"
    assert listed.totalCount == 1, listed.totalCount
    disk = listed.dataSet[0]
    assert (disk.diskId, disk.diskType, disk.diskStatus) == ("disk-recycled-data", "DATA", "RECYCLED"), vars(disk)
    assert isinstance(disk.diskSize, int), "diskSize is an integer of GiB"
    assert disk.tags is not None and disk.tags.tags is not None, "tags is an object holding a list"
    untagged = vm.describe_tagged("no-disk-has-this-tag")
    assert untagged.totalCount == 0 and not untagged.dataSet, "a filter the SDK sends is applied"

    released_as_zenlayer_releases(vm, "disk-recycled-data")
    expect_error("UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE", lambda: vm.release("disk-in-use"))
    expect_error("UNSUPPORTED_OPERATION_DISK_SYSTEM_TYPE", lambda: vm.release("disk-system"))
    wrong = Vm("2023-03-13", domain, key_id, password + "-wrong")
    expect_error("AUTHFAILURE_SIGNATURE_FAILURE", lambda: wrong.describe("disk-in-use"))

    newer = Vm("2026-04-01", domain, key_id, password)
    expect_error("UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE", lambda: newer.release("disk-available"))
    terminated = newer.terminate("disk-available")
    assert terminated.requestId, "TerminateDisk answers a requestId"
    assert status(newer, "disk-available") == "RECYCLED", "a terminated disk is in the recycle bin"
    released_as_zenlayer_releases(newer, "disk-available")
    print("the simulator answers as the official Python SDK expects of Zenlayer")


if __name__ == "__main__":
    main()
