<#
.SYNOPSIS
Builds Easel's Windows installer for one flavour from the locked dependencies.

.DESCRIPTION
    powershell -ExecutionPolicy Bypass -File installers\windows\build.ps1 -Flavour cpu|cuda|directml
        [-Python C:\path\to\python.exe] [-SkipInstaller] [-TestInstall]

Output under installers\windows\build\FLAVOUR\ (git-ignored):
    dist\Easel\                                 the app: easel.exe (command line), easelw.exe (window)
    Easel-VERSION-windows-FLAVOUR-setup.exe     the installer (Inno Setup)
    installed.txt                               the packages frozen into it

Steps: a fresh virtual environment with the app's wheel and installers\constraints.txt's pins,
the flavour's ONNX Runtime swapped in (flavour.py); the icon, drawn from the SVG; PyInstaller
(easel.spec); a smoke check of the app (easel doctor, easel generate with the starter model
into a temporary EASEL_HOME, the window still up after 15 s); Inno Setup (easel.iss).
-TestInstall then installs it for the current user, runs it, uninstalls it and checks that the
data folder (%LOCALAPPDATA%\Easel) is still there: for throwaway CI machines, it refuses to run
where Easel already has a data folder.

Needs Python 3.11 (python on PATH, or -Python) and, for the installer, Inno Setup 6 (ISCC.exe
on PATH, in Program Files, or named by the ISCC environment variable).
#>
[CmdletBinding()]
param(
    [ValidateSet('cpu', 'cuda', 'directml')]
    [string] $Flavour = 'cpu',
    [string] $Python = 'python',
    [switch] $SkipInstaller,
    [switch] $TestInstall
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 3.0

$root = (Resolve-Path (Join-Path $PSScriptRoot '..\..')).Path
Set-Location $root
$here = 'installers\windows'
$out = Join-Path $root "installers\windows\build\$Flavour"
$started = Get-Date

function Write-Step {
    $seconds = [int]((Get-Date) - $started).TotalSeconds
    Write-Host "build: [$seconds s] $args"
}

function Invoke-Checked {
    # Runs a program; its failure stops the build (PowerShell does not stop for programs).
    $program = $args[0]
    $arguments = @($args | Select-Object -Skip 1)
    & $program @arguments
    if ($LASTEXITCODE -ne 0) {
        throw "build: '$program $arguments' failed with exit code $LASTEXITCODE"
    }
}

function Get-Output {
    # What a program prints, trimmed; its failure stops the build.
    $program = $args[0]
    $arguments = @($args | Select-Object -Skip 1)
    $text = & $program @arguments
    if ($LASTEXITCODE -ne 0) {
        throw "build: '$program $arguments' failed with exit code $LASTEXITCODE"
    }
    return ($text | Out-String).Trim()
}

function Find-InnoSetup {
    if ($env:ISCC) { return $env:ISCC }
    $onPath = Get-Command 'ISCC.exe' -ErrorAction SilentlyContinue
    if ($onPath) { return $onPath.Source }
    foreach ($folder in @(${env:ProgramFiles(x86)}, $env:ProgramFiles, (Join-Path $env:LOCALAPPDATA 'Programs'))) {
        if ($folder) {
            $candidate = Join-Path $folder 'Inno Setup 6\ISCC.exe'
            if (Test-Path $candidate) { return $candidate }
        }
    }
    throw ("build: the installer needs Inno Setup 6 (https://jrsoftware.org/isinfo.php, or " +
           "'choco install innosetup'); the app itself is ready in $out\dist\Easel.")
}

function Get-FolderSize([string] $Folder) {
    $bytes = (Get-ChildItem -Recurse -File $Folder | Measure-Object -Sum Length).Sum
    return '{0:N0} MB' -f ($bytes / 1MB)
}

if (-not (Get-Command $Python -ErrorAction SilentlyContinue)) {
    throw "build: Easel needs Python 3.11 ('$Python' was not found; pass -Python C:\path\to\python.exe)."
}
& $Python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'
if ($LASTEXITCODE -ne 0) {
    throw "build: Easel needs Python 3.11 ('$Python' is another version; pass -Python C:\path\to\python.exe)."
}

# 1. A fresh build environment: the app's wheel and its locked dependencies, the freezer.
Write-Step "fresh build environment in $out ($Flavour flavour)"
if (Test-Path $out) { Remove-Item -Recurse -Force $out }
New-Item -ItemType Directory -Force $out | Out-Null
Invoke-Checked $Python -m venv "$out\venv"
$py = "$out\venv\Scripts\python.exe"
$pip = @('-m', 'pip', '--disable-pip-version-check', '-q')
Invoke-Checked $py @pip install -r "$here\requirements-build.txt"
$version = Get-Output $py "$here\flavour.py" version  # pyproject.toml's
# installers\constraints.txt's pins with the flavour's ONNX Runtime in place of the tested one.
Invoke-Checked $py "$here\flavour.py" constraints $Flavour 'installers\constraints.txt' "$out\constraints.txt"
Invoke-Checked $py @pip wheel --no-deps --no-build-isolation -w "$out\wheel" .
$wheel = (Get-ChildItem "$out\wheel\easel-*.whl" | Select-Object -First 1).FullName
# The wheel asks for onnxruntime-gpu on Windows; the three builds provide the same module and
# cannot share an environment: its requirements with the flavour's build, then the app itself.
Invoke-Checked $py "$here\flavour.py" requirements $Flavour $wheel "$out\requirements.txt"
Invoke-Checked $py @pip install -c "$out\constraints.txt" -r "$out\requirements.txt"
Invoke-Checked $py @pip install --no-deps $wheel
Write-Step (Get-Output $py "$here\flavour.py" check $Flavour)
(Get-Output $py -m pip --disable-pip-version-check freeze) | Set-Content -Encoding utf8 "$out\installed.txt"

# 2. The icon, drawn from the SVG at each size Windows shows.
$icon = "$out\easel.ico"
$env:QT_QPA_PLATFORM = 'offscreen'
try {
    Invoke-Checked $py "$here\make_icon.py" 'resources\icons\easel.svg' $icon
} finally {
    Remove-Item Env:QT_QPA_PLATFORM
}

# 3. Freeze: a onedir app with two programs.
Write-Step 'PyInstaller'
$env:EASEL_FLAVOUR = $Flavour
$env:EASEL_ICON = $icon
Invoke-Checked "$out\venv\Scripts\pyinstaller.exe" --noconfirm --log-level WARN `
    --distpath "$out\dist" --workpath "$out\work" "$here\easel.spec"
$app = "$out\dist\Easel"
Write-Step "app: $(Get-FolderSize $app) in $app"

# 4. Smoke check, into a throwaway data folder.
$smoke = Join-Path ([IO.Path]::GetTempPath()) "easel-smoke-$([guid]::NewGuid())"
New-Item -ItemType Directory $smoke | Out-Null
$env:EASEL_HOME = $smoke
try {
    Write-Step 'smoke check: easel doctor'
    Invoke-Checked "$app\easel.exe" doctor
    Write-Step 'smoke check: easel generate with the starter model'
    Invoke-Checked "$app\easel.exe" generate 'a dog on the left' --count 1 --output "$smoke\dog.png"
    if (-not (Test-Path "$smoke\dog.png")) { throw 'build: easel generate made no picture.' }
    # easelw.exe has no console, so no stdout: that must not break it.
    $windowless = Start-Process "$app\easelw.exe" -ArgumentList '--help' -Wait -PassThru
    if ($windowless.ExitCode -ne 0) {
        throw "build: easelw.exe --help failed with exit code $($windowless.ExitCode)."
    }
    # The window: still up after 15 s means Qt's platform plugin loaded and the app started.
    Write-Step 'smoke check: the window'
    $window = Start-Process "$app\easel.exe" -PassThru `
        -RedirectStandardOutput "$smoke\window-out.txt" -RedirectStandardError "$smoke\window-err.txt"
    Start-Sleep -Seconds 15
    if ($window.HasExited) {
        Get-Content "$smoke\window-err.txt" | Write-Host
        throw "build: the window closed by itself within 15 s (exit code $($window.ExitCode))."
    }
    Stop-Process -Id $window.Id -Force
} finally {
    Remove-Item Env:EASEL_HOME
}

# 5. The installer.
if ($SkipInstaller) {
    Write-Step "done: the app is in $app (no installer: -SkipInstaller)"
    return
}
Write-Step 'Inno Setup'
$iscc = Find-InnoSetup
$numericVersion = Get-Output $py "$here\flavour.py" numeric-version
Invoke-Checked $iscc /Qp "/DAppVersion=$version" "/DNumericVersion=$numericVersion" `
    "/DFlavour=$Flavour" "/DBundleDir=$app" "/DIconFile=$icon" "/DOutputDir=$out" "$here\easel.iss"
$setup = "$out\Easel-$version-windows-$Flavour-setup.exe"
if (-not (Test-Path $setup)) { throw "build: Inno Setup made no $setup." }
Write-Step ("installer: $setup ({0:N0} MB)" -f ((Get-Item $setup).Length / 1MB))

# 6. Install, run, uninstall: the data folder must stay.
if ($TestInstall) {
    $data = Join-Path $env:LOCALAPPDATA 'Easel'
    if (Test-Path $data) {
        throw "build: -TestInstall is for throwaway machines, and this one has an Easel data folder ($data)."
    }
    $installed = Join-Path $env:LOCALAPPDATA 'Programs\Easel'  # the per-user default
    Write-Step "test install into $installed"
    $run = Start-Process $setup -Wait -PassThru -ArgumentList @(
        '/VERYSILENT', '/SUPPRESSMSGBOXES', '/NORESTART', '/CURRENTUSER', "/LOG=`"$out\install.log`"")
    if ($run.ExitCode -ne 0) { throw "build: the installer failed with exit code $($run.ExitCode) (see $out\install.log)." }
    Invoke-Checked "$installed\easel.exe" generate 'a dog on the left' --count 1
    $pngKey = 'HKCU:\Software\Classes\.png\OpenWithProgids'
    if (-not (Get-ItemProperty $pngKey -Name 'Easel.Picture' -ErrorAction SilentlyContinue)) {
        throw "build: the installer registered no 'Open with Easel' for .png."
    }
    Write-Step ("Open with Easel runs: " +
        (Get-Item 'HKCU:\Software\Classes\Easel.Picture\shell\open\command').GetValue(''))

    Write-Step 'test uninstall'
    $run = Start-Process "$installed\unins000.exe" -Wait -PassThru -ArgumentList @(
        '/VERYSILENT', '/SUPPRESSMSGBOXES', '/NORESTART')
    if ($run.ExitCode -ne 0) { throw "build: the uninstaller failed with exit code $($run.ExitCode)." }
    # The uninstaller hands over to a copy of itself and returns at once: wait for the files.
    $deadline = (Get-Date).AddMinutes(3)
    while ((Test-Path "$installed\easel.exe") -and ((Get-Date) -lt $deadline)) { Start-Sleep -Seconds 2 }
    if (Test-Path "$installed\easel.exe") { throw "build: the uninstaller left the app in $installed." }
    $pictures = @(Get-ChildItem -Recurse -File -Filter '*.png' (Join-Path $data 'images') -ErrorAction SilentlyContinue)
    if ($pictures.Count -lt 1) { throw "build: uninstalling took the user's pictures from $data." }
    if (Get-ItemProperty $pngKey -Name 'Easel.Picture' -ErrorAction SilentlyContinue) {
        throw "build: the uninstaller left 'Open with Easel' behind for .png."
    }
    Write-Step "uninstalled; the data folder $data and its $($pictures.Count) picture(s) stayed"
}
Write-Step 'done'
