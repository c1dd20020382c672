"""The ``RunInstances`` parameters of a job's attempt, without boto3 (DESIGN.md sections 6 and 12).

Pure functions, so ``jobman schedule --dry-run`` prints exactly what
:meth:`jobman_cli.launchers.ec2.EC2Launcher.launch` sends, without importing boto3 (``schedule``
stays fast) and without credentials.
"""

from __future__ import annotations

from typing import Any

from ..model import Job
from .base import ATTEMPT_TAG, JOB_ID_TAG, EC2Settings


def metadata_options(job: Job) -> dict[str, Any]:
    """IMDS settings of a job's instance (DESIGN.md section 12).

    IMDSv2 only (``HttpTokens=required``): the user-data, with the attempt's callback token, is
    served by IMDS, and v1's plain GET is what SSRF bugs reach. ``HttpPutResponseHopLimit=1``: the
    token's PUT answer cannot cross the extra hop of a container's network (a bridge or NAT), so
    the job's container cannot get a token and with it the instance role's credentials (which read
    the job's secrets); only the host's own processes (the user-data script, the AWS CLI, Docker's
    awslogs driver) can. ``--container-imds`` (``job.container_imds``) raises it to 2 for a job
    whose container must call AWS as the instance role.
    """
    return {"HttpTokens": "required", "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": 2 if job.container_imds else 1}


def instance_tags(job: Job, settings: EC2Settings, store_id: str) -> list[dict[str, str]]:
    """The instance's and volume's tags: a Name, the operator's extra tags, then jobman's own."""
    tags = {"Name": f"jobman-{job.id}"}
    tags.update(dict(settings.extra_tags))  # may rename, may not touch the jobman tags
    tags.update({JOB_ID_TAG: str(job.id), ATTEMPT_TAG: str(job.attempts), settings.store_tag_key: store_id})
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def run_instances_params(job: Job, settings: EC2Settings, user_data: str, *, image_id: str, store_id: str,
                         root_device: str | None = None) -> dict[str, Any]:
    """The ``RunInstances`` parameters for one attempt of ``job``: pure (no AWS call), so
    ``schedule --dry-run`` prints exactly what :meth:`EC2Launcher.launch` sends. ``image_id`` is
    the resolved AMI and ``root_device`` its root device name (needed only with ``disk_gb``)."""
    from ..capacity import SPOT, ladder, spot_options

    # A job narrowed to one rung (:func:`jobman_cli.capacity.narrowed`) has one rung; otherwise this
    # is the ladder's first rung (``schedule --dry-run``).
    rung = ladder(job, settings.instance_type, settings.subnet_ids)[0]
    tags = instance_tags(job, settings, store_id)
    params: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceType": rung.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": job.launch_token,
        "UserData": user_data,  # plain text: botocore base64-encodes it
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": metadata_options(job),
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                              {"ResourceType": "volume", "Tags": tags}],
    }
    if rung.subnet_id:
        params["SubnetId"] = rung.subnet_id
    if rung.market == SPOT:
        params["InstanceMarketOptions"] = spot_options()
    if settings.security_group_ids:
        params["SecurityGroupIds"] = list(settings.security_group_ids)
    if settings.iam_instance_profile:
        profile = settings.iam_instance_profile
        params["IamInstanceProfile"] = {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}
    if settings.key_name:
        params["KeyName"] = settings.key_name
    if job.disk_gb is not None:
        # Only the size: EC2 keeps the AMI's snapshot and volume type for the root device.
        params["BlockDeviceMappings"] = [{"DeviceName": root_device,
                                          "Ebs": {"VolumeSize": int(job.disk_gb), "DeleteOnTermination": True}}]
    return params
