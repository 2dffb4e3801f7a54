"""EuroSAT (Sentinel-2 land use, RGB): ``eurosat/2750/<Class>/*.jpg`` + split_zhou_EuroSAT.json."""
from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset
from .download import Source
from .splits import read_and_split_data

# Folder names -> the readable names CoOp's split file uses in prompts.
NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@DATASET_REGISTRY.register()
class EuroSAT(BenchmarkDataset):
    folder = "eurosat"
    image_folder = "2750"
    split_file = "split_zhou_EuroSAT.json"
    docs_section = "EuroSAT"
    published_counts = {"classes": 10, "train": 13500, "val": 5400, "test": 8100}
    sources = (
        # The original madm.dfki.de address is dead; torchvision's pinned mirror of the same zip.
        Source(
            "EuroSAT.zip",
            url="https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
            "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
            md5="c8fa014336c82ac7804f0398fcb19387",
            unpack=True,
        ),
        Source("split_zhou_EuroSAT.json", gdrive_id="1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),
    )

    def create_split(self):
        return read_and_split_data(self.image_dir, new_cnames=NEW_CNAMES)
