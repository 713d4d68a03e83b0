"""Stage-I networks (Sec. 3.1): the stem, foreground / background encoders, the U-Net decoder and the DCGAN
discriminator, with their model config and factory.

Shapes follow the official Market-1501 setting (128x64 images, 224-D foreground = 7 ROIs x 32-D, 128-D
background, 18 pose maps); widths and depths are arguments.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align

from generator.config import ConfigValueError, check_ranges
from generator.models.layers import ResBlock, activation, xavier_init

FG_ROIS = 7


@dataclass
class Stage1ModelConfig:
    channels: int = 128  # stem width; encoder / decoder levels are channels x 1..levels
    # beyond the paper: the widest a level may be (0: no cap). The deepest levels hold most of the parameters and
    # few of the FLOPs, so a cap keeps a wide model's shallow levels while its checkpoint stays small
    max_level_channels: int = 0
    enc_levels: int = 5  # residual levels of the fg / bg encoders
    dec_levels: int = 5  # levels of the U-Net decoder
    roi_size: int = 48  # side of each body-ROI crop
    fg_dim: int = 224  # foreground embedding: 7 ROIs x 32
    bg_dim: int = 128  # background embedding
    bottleneck: int = 64  # FC bottleneck of the U-Net
    fg_encoder: Literal["bodyroi7", "wholebody"] = "bodyroi7"
    roi_crop: Literal["roi_align", "grid_sample"] = "roi_align"
    roi_sampling_ratio: int = 1  # roi_align samples per bin side (1 is enough at 48x48)
    # appearance into the decoder: tile (paper) | linear (same away from borders, cheaper)
    injection: Literal["tile", "linear"] = "tile"
    disc_channels: int = 64  # DCGAN discriminator width

    def __post_init__(self):
        check_ranges(self, positive=("channels", "enc_levels", "dec_levels", "roi_size", "fg_dim", "bg_dim",
                                     "bottleneck", "roi_sampling_ratio", "disc_channels"))
        if self.max_level_channels and self.max_level_channels < self.channels:
            raise ConfigValueError("max_level_channels", f"{self.max_level_channels}: below the stem's "
                                                         f"{self.channels} channels; use 0 (no cap) or at least "
                                                         f"model.channels")


def level_width(ch: int, level: int, cap: int = 0) -> int:
    """Channels of encoder / decoder level ``level`` (0-based): ``ch * (level + 1)``, at most ``cap`` (0: no cap)."""
    return min(ch * (level + 1), cap) if cap else ch * (level + 1)


class ConvEncoder(nn.Module):
    """``levels`` residual blocks at widths ch, 2ch, ..., levels*ch (each at most ``cap``, 0: none) with a stride-2
    conv + ReLU between; then flatten and a linear FC to ``out_dim`` (no pooling). Input has ``ch`` channels (the
    stem's)."""

    def __init__(self, ch: int, levels: int, in_size: tuple[int, int], out_dim: int, cap: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        h, w = in_size
        for i in range(levels):
            width = level_width(ch, i, cap)
            layers.append(ResBlock(width))
            if i < levels - 1:
                layers += [nn.Conv2d(width, level_width(ch, i + 1, cap), 3, stride=2, padding=1), activation()]
                h, w = (h + 1) // 2, (w + 1) // 2
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(level_width(ch, levels - 1, cap) * h * w, out_dim)

    def forward(self, x):
        return self.fc(self.body(x).flatten(1))


def crop_rois(feat: torch.Tensor, boxes: torch.Tensor, size: int, method: str = "roi_align", sampling_ratio: int = 1):
    """(B, C, H, W) features, (B, R, 4) boxes (y1, x1, y2, x2 px) -> (B*R, C, size, size) crops."""
    b, r, _ = boxes.shape
    if method == "roi_align":
        # boxes in float32 whatever the autocast dtype: batch indices and pixel coordinates must stay exact
        idx = torch.arange(b, device=feat.device, dtype=torch.float32).repeat_interleave(r)[:, None]
        xyxy = boxes.reshape(-1, 2, 2).flip(-1).reshape(-1, 4).float()  # (x1, y1, x2, y2); no index tensor, so
        # nothing is copied from the host while a CUDA graph captures the step
        crops = roi_align(feat.float(), torch.cat([idx, xyxy], 1), (size, size), spatial_scale=1.0,
                          sampling_ratio=sampling_ratio, aligned=True)
        return crops.to(feat.dtype)
    if method == "grid_sample":  # bilinear crop through an affine grid: cheaper backward on CPU
        h, w = feat.shape[-2:]
        y1, x1, y2, x2 = boxes.reshape(-1, 4).to(feat.dtype).unbind(1)
        theta = torch.zeros(b * r, 2, 3, device=feat.device, dtype=feat.dtype)
        theta[:, 0, 0] = (x2 - x1) / w
        theta[:, 0, 2] = (x1 + x2) / w - 1
        theta[:, 1, 1] = (y2 - y1) / h
        theta[:, 1, 2] = (y1 + y2) / h - 1
        grid = F.affine_grid(theta, (b * r, feat.shape[1], size, size), align_corners=False)
        src = feat.repeat_interleave(r, dim=0)
        return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    raise ValueError(f"unknown ROI crop method {method!r}")


class UNetDecoder(nn.Module):
    """Appearance (fg + bg embedding) and 18 pose maps -> RGB (linear output, images in [-1, 1]).

    The official U-Net: conv + ``levels`` residual levels down (skips kept), a linear FC
    bottleneck (flatten -> ``bottleneck`` -> ch x h x w), then per level: concatenate the
    skip, a residual block at the concatenated width, nearest x2 upsampling and a 1x1 conv.
    Pose maps enter as {-1, +1} (background -1), as in the official code.

    ``injection="tile"``: the appearance vector is tiled over H x W and concatenated with the
    pose maps (the paper). ``"linear"``: the same first convolution split in two, the
    appearance part applied as one per-pixel linear term (equal away from the image border,
    far cheaper than convolving 370 channels).
    """

    def __init__(self, app_dim: int, pose_ch: int, ch: int, levels: int, size: tuple[int, int], bottleneck: int,
                 injection: str = "tile", cap: int = 0):
        super().__init__()
        self.injection = injection
        if injection == "tile":
            self.inp = nn.Conv2d(app_dim + pose_ch, ch, 3, padding=1)
        elif injection == "linear":
            self.inp = nn.Conv2d(pose_ch, ch, 3, padding=1)
            self.app = nn.Linear(app_dim, ch, bias=False)
        else:
            raise ValueError(f"unknown appearance injection {injection!r}")
        self.down_blocks, self.downs = nn.ModuleList(), nn.ModuleList()
        h, w = size
        for i in range(levels):
            width = level_width(ch, i, cap)
            self.down_blocks.append(ResBlock(width))
            if i < levels - 1:
                self.downs.append(nn.Sequential(nn.Conv2d(width, level_width(ch, i + 1, cap), 3, stride=2, padding=1),
                                                activation()))
                h, w = (h + 1) // 2, (w + 1) // 2
        self.ch, self.low = ch, (h, w)
        self.to_z = nn.Linear(level_width(ch, levels - 1, cap) * h * w, bottleneck)
        self.from_z = nn.Linear(bottleneck, ch * h * w)
        self.up_blocks, self.ups = nn.ModuleList(), nn.ModuleList()
        width = ch  # channels coming out of the bottleneck
        for i in reversed(range(levels)):
            cat = width + level_width(ch, i, cap)  # plus the skip of this level
            self.up_blocks.append(ResBlock(cat))
            if i > 0:
                width = level_width(ch, i - 1, cap)
                self.ups.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cat, width, 1),
                                              activation()))
            else:
                width = cat
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, appearance: torch.Tensor, pose_maps: torch.Tensor) -> torch.Tensor:
        b, _, h, w = pose_maps.shape
        pose_maps = pose_maps * 2 - 1  # {0, 1} -> {-1, +1}
        if self.injection == "tile":
            tiled = appearance[:, :, None, None].expand(-1, -1, h, w)
            x = F.relu(self.inp(torch.cat([tiled.to(pose_maps.dtype), pose_maps], 1)))
        else:
            x = F.relu(self.inp(pose_maps) + self.app(appearance).to(pose_maps.dtype)[:, :, None, None])
        skips = []
        for i, block in enumerate(self.down_blocks):
            x = block(x)
            skips.append(x)
            if i < len(self.downs):
                x = self.downs[i](x)
        x = self.from_z(self.to_z(x.flatten(1))).view(b, self.ch, *self.low)
        for j, block in enumerate(self.up_blocks):
            skip = skips[len(skips) - 1 - j]
            x = block(torch.cat([x[..., :skip.shape[-2], :skip.shape[-1]], skip], 1))
            if j < len(self.ups):
                x = self.ups[j](x)
        return self.out(x)


class DisentangledGenerator(nn.Module):
    """Stage-I: image + pose -> (fg 224-D, bg 128-D) embeddings; (fg, bg, pose maps) -> image."""

    def __init__(self, size=(128, 64), channels: int = 128, enc_levels: int = 5, dec_levels: int = 5,
                 roi_size: int = 48, fg_dim: int = 32 * FG_ROIS, bg_dim: int = 128, bottleneck: int = 64,
                 fg_encoder: str = "bodyroi7", roi_crop: str = "roi_align", roi_sampling_ratio: int = 1,
                 injection: str = "tile", pose_ch: int = 18, max_level_channels: int = 0):
        super().__init__()
        self.size, self.fg_dim, self.bg_dim = tuple(size), fg_dim, bg_dim
        self.fg_encoder_kind, self.roi_size = fg_encoder, roi_size
        self.roi_crop, self.roi_sampling_ratio = roi_crop, roi_sampling_ratio
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), activation(), ResBlock(channels))
        if fg_encoder == "bodyroi7":
            if fg_dim % FG_ROIS:
                raise ValueError(f"fg_dim {fg_dim} must be a multiple of {FG_ROIS} ROIs")
            self.fg_encoder = ConvEncoder(channels, enc_levels, (roi_size, roi_size), fg_dim // FG_ROIS,
                                          max_level_channels)
        elif fg_encoder == "wholebody":
            self.fg_encoder = ConvEncoder(channels, enc_levels, self.size, fg_dim, max_level_channels)
        else:
            raise ValueError(f"unknown foreground encoder {fg_encoder!r}; use bodyroi7 or wholebody")
        self.bg_encoder = ConvEncoder(channels, enc_levels, self.size, bg_dim, max_level_channels)
        self.decoder = UNetDecoder(fg_dim + bg_dim, pose_ch, channels, dec_levels, self.size, bottleneck, injection,
                                   max_level_channels)
        xavier_init(self)

    def encode(self, image, pose_mask, roi_boxes, roi_visible):
        """(B,3,H,W) image in [-1,1], (B,1,H,W) mask, (B,7,4) boxes, (B,7) visibility -> fg (B,224), bg (B,128)."""
        feat = self.stem(image)
        fg_feat, bg_feat = feat * pose_mask, feat * (1 - pose_mask)
        if self.fg_encoder_kind == "bodyroi7":
            crops = crop_rois(fg_feat, roi_boxes, self.roi_size, self.roi_crop, self.roi_sampling_ratio)
            fg = self.fg_encoder(crops).view(image.shape[0], FG_ROIS, -1) * roi_visible[:, :, None].to(feat.dtype)
            fg = fg.flatten(1)
        else:
            fg = self.fg_encoder(fg_feat)
        return fg, self.bg_encoder(bg_feat)

    def decode(self, fg, bg, pose_maps):
        return self.decoder(torch.cat([fg, bg], 1), pose_maps)

    def forward(self, image, pose_mask, roi_boxes, roi_visible, pose_maps):
        fg, bg = self.encode(image, pose_mask, roi_boxes, roi_visible)
        return self.decode(fg, bg, pose_maps), fg, bg


class DCGANDiscriminator(nn.Module):
    """4 x (5x5 stride-2 conv), widths ch..8ch, BN after the first, LeakyReLU 0.2, then one logit."""

    def __init__(self, size=(128, 64), ch: int = 64, in_ch: int = 3):
        super().__init__()
        layers, c_in = [], in_ch
        h, w = size
        for i in range(4):
            c_out = ch * 2 ** i
            layers.append(nn.Conv2d(c_in, c_out, 5, stride=2, padding=2))
            if i > 0:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in, h, w = c_out, (h + 1) // 2, (w + 1) // 2
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in * h * w, 1)
        for m in self.modules():  # the official DCGAN init: weights of std 0.02, zero biases
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.body(x).flatten(1)).squeeze(1)

    def features(self, x) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the logit, as ``forward``; the activation after each of the 4 convolution blocks): the feature-matching
        term compares the latter on real and generated images."""
        feats = []
        for layer in self.body:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                feats.append(x)
        return self.fc(x.flatten(1)).squeeze(1), feats


def build_generator(m: Stage1ModelConfig, size) -> DisentangledGenerator:
    return DisentangledGenerator(size=tuple(size), channels=m.channels, enc_levels=m.enc_levels,
                                 dec_levels=m.dec_levels, roi_size=m.roi_size, fg_dim=m.fg_dim, bg_dim=m.bg_dim,
                                 bottleneck=m.bottleneck, fg_encoder=m.fg_encoder, roi_crop=m.roi_crop,
                                 roi_sampling_ratio=m.roi_sampling_ratio, injection=m.injection,
                                 max_level_channels=m.max_level_channels)
