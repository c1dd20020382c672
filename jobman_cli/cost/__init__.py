"""Cost receipts (DESIGN.md section 13): what an ended job's instance cost, and from which prices.

Modules, smallest first, none importing boto3 at the top (``jobman cost`` and ``status`` stay fast):

=====================  ==========================================================================
:mod:`.quote`          a price with its source and fetch time; the one error type (transient or not)
:mod:`.cache`          the price cache file under ``JOBMAN_HOME`` (atomic writes, refresh age)
:mod:`.prices_ondemand` the AWS Price List API (``pricing:GetProducts``): instance-hours, EBS GB-months
:mod:`.prices_spot`    ``DescribeSpotPriceHistory``, time-weighted over the run
:mod:`.receipt`        the arithmetic and the words of ``cost-basis`` (pure)
:mod:`.pricer`         one job's receipt from AWS facts (DescribeInstances, DescribeImages, prices)
:mod:`.totals`         ``jobman cost``: sums per group, and the jobs without a price
:mod:`.limits`         ``--max-cost``: the worst case of a job from cached prices
=====================  ==========================================================================
"""
