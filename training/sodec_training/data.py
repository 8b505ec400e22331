"""Training images: a folder of images of any sizes, random crops and flips that depend only on
(seed, epoch, index), so that the data of every step is the same in a resumed run and in any process."""

import hashlib
import io
import math
import os
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sodec_pipeline.image_files import IMAGE_EXTENSIONS
from sodec_pipeline.image_processing import pil_to_rgb_array
from sodec_pipeline.orientation import upright


def list_images(paths: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]) -> List[Path]:
    """Image files under the given folders (recursively, sorted) and the given files themselves."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: List[Path] = []
    for entry in paths:
        entry = Path(entry)
        if entry.is_dir():
            files.extend(sorted(p for p in entry.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        elif entry.is_file():
            files.append(entry)
        else:
            raise FileNotFoundError(f"{entry} is neither an image file nor a folder")
    return files


def _sample_seed(seed: int, key: int) -> int:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class ImageCrops(Dataset):
    """Random ``resolution``×``resolution`` crops (and horizontal flips) of a sequence of images.

    Subclasses say how to open image ``index`` (:meth:`open_image`, a PIL image); the crops are the same
    code for every source. Items are addressed by a *key* ``epoch * len(self) + index`` (what
    :class:`EpochShuffleSampler` yields): the crop and the flip are drawn from a generator seeded with
    ``(seed, key)``, never from the global RNG, so they are the same whichever process or DataLoader worker
    loads them and whether or not the run was resumed. With ``random_scale=(low, high)`` each image is first
    resized by a factor drawn log-uniformly from that range (Lanczos), so that larger, smoother photos than the
    folder's (factors above 1) and denser ones (below 1) are in the training distribution. Images whose shorter
    side is then below ``resolution`` are scaled up (bicubic) to that side; larger images are cropped.
    """

    def __init__(
        self,
        resolution: int,
        random_flip: bool = True,
        center_crop: bool = False,
        seed: int = 0,
        random_scale: Optional[Tuple[float, float]] = None,
    ):
        if resolution % 64:
            raise ValueError(f"--resolution must be a multiple of 64 (the codec's stride); got {resolution}")
        if random_scale is not None and not 0 < random_scale[0] <= random_scale[1]:
            raise ValueError(f"--random_scale needs 0 < LOW <= HIGH; got {random_scale[0]} {random_scale[1]}")
        self.random_scale = random_scale
        self.resolution = resolution
        self.random_flip = random_flip
        self.center_crop = center_crop
        self.seed = seed

    def __len__(self) -> int:
        raise NotImplementedError

    def open_image(self, index: int) -> PIL.Image.Image:
        raise NotImplementedError

    def __getitem__(self, key: int):
        index = key % len(self)
        generator = torch.Generator().manual_seed(_sample_seed(self.seed, key))
        with self.open_image(index) as file:
            image = upright(file)  # crops of the photo as seen: its EXIF orientation applied
            width, height = image.size
            size = self.resolution
            if self.random_scale is not None:
                low, high = (math.log(bound) for bound in self.random_scale)
                factor = math.exp(low + (high - low) * float(torch.rand((), generator=generator)))
                width, height = max(1, round(width * factor)), max(1, round(height * factor))
                image = image.convert("RGB").resize((width, height), PIL.Image.LANCZOS)
            if min(width, height) < size:
                scale = size / min(width, height)
                width, height = max(size, round(width * scale)), max(size, round(height * scale))
                image = image.convert("RGB").resize((width, height), PIL.Image.BICUBIC)
            if self.center_crop:
                top, left = (height - size) // 2, (width - size) // 2
            else:
                top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
            crop = pil_to_rgb_array(image.crop((left, top, left + size, top + size)))
        pixels = torch.from_numpy(np.array(crop)).permute(2, 0, 1).float() / 255.0
        if self.random_flip and bool(torch.rand((), generator=generator) < 0.5):
            pixels = pixels.flip(-1)
        return {"pixel_values": pixels}


class ImageFolderCrops(ImageCrops):
    """:class:`ImageCrops` of the images in folders (searched recursively, sorted) or image files."""

    def __init__(self, root, resolution: int, random_flip: bool = True, center_crop: bool = False, seed: int = 0,
                 random_scale: Optional[Tuple[float, float]] = None):  # fmt: skip
        super().__init__(resolution, random_flip=random_flip, center_crop=center_crop, seed=seed,
                         random_scale=random_scale)  # fmt: skip
        self.files = list_images(root)
        if not self.files:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {root}")

    def __len__(self) -> int:
        return len(self.files)

    def open_image(self, index: int) -> PIL.Image.Image:
        return PIL.Image.open(self.files[index])


class DatasetCrops(ImageCrops):
    """:class:`ImageCrops` of the column ``image_column`` of a 🤗 ``datasets.Dataset``: an ``Image`` feature
    (decoded to PIL), or file paths, or ``{"bytes", "path"}`` dicts (an undecoded ``Image`` feature)."""

    def __init__(
        self,
        dataset,
        resolution: int,
        image_column: str = "image",
        random_flip: bool = True,
        center_crop: bool = False,
        seed: int = 0,
        random_scale: Optional[Tuple[float, float]] = None,
    ):
        super().__init__(resolution, random_flip=random_flip, center_crop=center_crop, seed=seed,
                         random_scale=random_scale)  # fmt: skip
        if image_column not in dataset.column_names:
            raise ValueError(
                f"--image_column '{image_column}' is not a column of the dataset; its columns: "
                f"{', '.join(dataset.column_names)}"
            )
        if len(dataset) == 0:
            raise ValueError("the training dataset is empty")
        self.dataset = dataset.select_columns([image_column])
        self.image_column = image_column

    def __len__(self) -> int:
        return len(self.dataset)

    def open_image(self, index: int) -> PIL.Image.Image:
        item = self.dataset[index][self.image_column]
        if isinstance(item, PIL.Image.Image):
            return item
        if isinstance(item, dict):  # an Image feature without decoding
            if item.get("bytes") is not None:
                return PIL.Image.open(io.BytesIO(item["bytes"]))
            item = item.get("path")
        if isinstance(item, (str, os.PathLike)):
            return PIL.Image.open(item)
        raise TypeError(f"column '{self.image_column}' holds {type(item).__name__}, not images")


class EpochShuffleSampler(Sampler):
    """Shuffles the dataset once per epoch from ``seed + epoch`` and yields keys ``epoch * n + index``.

    Every process computes the same order (accelerate then shards the batches) and the order does not
    depend on the global RNG. ``set_epoch`` is called by accelerate's prepared DataLoader.
    """

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True):
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = range(self.num_items)
        base = self.epoch * self.num_items
        return iter([base + i for i in order])


def collate_images(examples):
    return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]).contiguous()}


# ---------------------------------------------------------------------------------------------- train_sodec.py's data
def load_hf_dataset(args, seed: int):
    """The 'train' split of --dataset_name (Hub id, `imagefolder` folder, parquet file or folder), shortened to
    --max_train_samples images (the first of a shuffle from ``seed``, as in diffusers' examples)."""
    try:
        import datasets
    except ImportError:
        raise ImportError("--dataset_name needs 🤗 datasets: pip install datasets") from None
    name = args.dataset_name
    if os.path.isfile(name) and name.endswith(".parquet"):
        dataset = datasets.load_dataset("parquet", data_files={"train": name}, cache_dir=args.cache_dir)
    else:  # a Hub id, or a local folder whose builder (imagefolder, parquet, ...) datasets infers
        dataset = datasets.load_dataset(name, args.dataset_config_name, cache_dir=args.cache_dir)
    if "train" not in dataset:
        raise ValueError(f"{name} has no 'train' split; its splits: {', '.join(dataset)}")
    dataset = dataset["train"]
    if args.max_train_samples is not None:
        dataset = dataset.shuffle(seed=seed).select(range(min(args.max_train_samples, len(dataset))))
    return dataset


def build_train_dataset(args, seed: int) -> ImageCrops:
    """The crops of --train_data_dir's images or of --dataset_name's: the same crop code for both."""
    if args.dataset_name is not None:
        return DatasetCrops(
            load_hf_dataset(args, seed),
            args.resolution,
            image_column=args.image_column,
            random_flip=args.random_flip,
            center_crop=args.center_crop,
            seed=seed,
            random_scale=args.random_scale,
        )
    return ImageFolderCrops(
        args.train_data_dir, args.resolution, random_flip=args.random_flip, center_crop=args.center_crop, seed=seed,
        random_scale=args.random_scale,
    )  # fmt: skip


def build_train_dataloader(dataset: ImageCrops, args, seed: int) -> DataLoader:
    """Batches of ``dataset`` in the order of :class:`EpochShuffleSampler` (from ``seed``), with
    --dataloader_num_workers workers kept alive across epochs."""
    return DataLoader(
        dataset,
        sampler=EpochShuffleSampler(len(dataset), seed=seed),
        batch_size=args.train_batch_size,
        collate_fn=collate_images,
        num_workers=args.dataloader_num_workers,
        persistent_workers=args.dataloader_num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
