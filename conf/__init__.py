"""The packaged Hydra configs (config groups model/ dataset/ method/ metric/ experiment/ hydra/), found by Hydra as
``pkg://xaibench.conf``.  In the repository this is the top-level ``conf/`` folder."""
