"""GuidedNonLocal dropped into torchvision's DeepLabV3 (the README quick-start)."""
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation import deeplabv3_resnet50

from ggnet_fast import GuidedNonLocal


class GuidedDeepLabV3(nn.Module):
    """DeepLabV3-ResNet50 whose layer-4 features attend under layer-3 guidance."""

    def __init__(self, num_classes: int = 1):
        super().__init__()
        base = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes,
                                  aux_loss=True)
        self.backbone, self.head = base.backbone, base.classifier   # {"out": layer4, "aux": layer3}
        self.attention = GuidedNonLocal(2048, guide_channels=1024, key_channels=64,
                                        guide_key_channels=64)

    def forward(self, images):
        feats = self.backbone(images)
        x = self.attention(feats["out"], feats["aux"])
        return F.interpolate(self.head(x), size=images.shape[-2:], mode="bilinear",
                             align_corners=False)


def test_guided_deeplabv3_trains(seed):
    model = GuidedDeepLabV3()
    for module in model.modules():      # a deterministic objective on the fixed batch
        if isinstance(module, nn.Dropout):
            module.eval()
    images = torch.randn(2, 3, 64, 64)
    masks = (F.avg_pool2d(images[:, :1], 9, 1, 4) > 0).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(images), masks)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    # gamma is learnable and moved away from 0, so the attention branch is training.
    assert model.attention.gamma.abs().item() > 0
    assert model.attention.theta.weight.grad is not None
