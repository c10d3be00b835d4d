"""Retrofit ``ggnet_fast``'s guided attention into other libraries' segmentation models.

::

    from ggnet_fast.integrations import retrofit
    model = retrofit(smp.Unet("resnet34", encoder_weights=None))     # or a timm / torchvision model

The block (``GuidedNonLocal``, gamma = 0) goes on the deepest backbone feature, guided by
the next shallower one; see :func:`retrofit` and docs/integrations.md.  The libraries
(segmentation_models_pytorch, timm, torchvision) are imported only when a function needs
them: ``pip install ggnet_fast[integrations]``.
"""
from .registry import ATTENTIONS, build_attention, register_attention
from .retrofit import retrofit
from .slot import FeatureRetrofit
from .smp_models import retrofit_smp
from .timm_backbones import retrofit_timm
from .torchvision_models import retrofit_torchvision

__all__ = ["ATTENTIONS", "FeatureRetrofit", "build_attention", "register_attention", "retrofit",
           "retrofit_smp", "retrofit_timm", "retrofit_torchvision"]
