"""The simulator seen through Zenlayer's own Python SDK (zenlayercloud-sdk-python),
a client nobody here wrote: it signs, sends and reads exactly as it does against
Zenlayer. Usage: simulator_conformance.py HOST:PORT ACCESS_KEY_ID ACCESS_KEY_PASSWORD.
Exits non-zero, saying what differed, if the simulator answers in a way the SDK
does not expect of Zenlayer."""
import sys

from zenlayercloud.common.config import Config
from zenlayercloud.common.credential import Credential
from zenlayercloud.common.excpetion.zenlayer_cloud_sdk_exception import ZenlayerCloudSdkException
from zenlayercloud.vm.v20230313 import models
from zenlayercloud.vm.v20230313.vm_client import VmClient


def client(domain, key_id, password):
    config = Config(scheme="http", domain=domain, request_timeout=10, rate_limit_max_retries=0)
    return VmClient(Credential(key_id, password), config)


def describe(vm, disk_id):
    request = models.DescribeDisksRequest()
    request.diskIds = [disk_id]
    return vm.DescribeDisks(request)


def release(vm, disk_id):
    request = models.ReleaseDiskRequest()
    request.diskId = disk_id
    return vm.ReleaseDisk(request)


def expect_error(code, call):
    try:
        call()
    except ZenlayerCloudSdkException as error:
        assert error.code == code, f"expected {code}, got {error.code}: {error.message}"
        assert error.request_id, f"{code} carries no requestId"
        return
    raise AssertionError(f"expected {code}, the call succeeded")


def main():
    domain, key_id, password = sys.argv[1:4]
    vm = client(domain, key_id, password)

    listed = describe(vm, "disk-recycled-data")
    assert listed.requestId, "DescribeDisks carries a requestId"
    assert listed.totalCount == 1, listed.totalCount
    disk = listed.dataSet[0]
    assert (disk.diskId, disk.diskType, disk.diskStatus) == ("disk-recycled-data", "DATA", "RECYCLED"), vars(disk)
    assert isinstance(disk.diskSize, int), "diskSize is an integer of GiB"
    assert disk.tags is not None and disk.tags.tags is not None, "tags is an object holding a list"

    released = release(vm, "disk-recycled-data")
    assert released.requestId, "ReleaseDisk answers a requestId"
    after = describe(vm, "disk-recycled-data")
    assert after.totalCount == 0 and not after.dataSet, "a released disk is no longer listed"

    expect_error("INVALID_DISK_NOT_FOUND", lambda: release(vm, "disk-recycled-data"))
    expect_error("UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE", lambda: release(vm, "disk-in-use"))
    expect_error("UNSUPPORTED_OPERATION_DISK_SYSTEM_TYPE", lambda: release(vm, "disk-system"))
    wrong = client(domain, key_id, password + "-wrong")
    expect_error("AUTHFAILURE_SIGNATURE_FAILURE", lambda: describe(wrong, "disk-in-use"))
    print("the simulator answers as the official Python SDK expects of Zenlayer")


if __name__ == "__main__":
    main()
