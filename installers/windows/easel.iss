; Inno Setup 6 script for Easel's Windows installer, one per flavour (cpu, cuda, directml).
; installers\windows\build.ps1 compiles it with everything it needs on the command line:
;   ISCC /DAppVersion=VERSION /DNumericVersion=A.B.C.D /DFlavour=cpu /DBundleDir=...\dist\Easel
;        /DIconFile=...\easel.ico /DOutputDir=... easel.iss
; The version comes from pyproject.toml (build.ps1 reads it); nothing here repeats it.
;
; Per-user by default (no administrator needed): the program goes to
; %LOCALAPPDATA%\Programs\Easel. The user's library, settings and models live in
; %LOCALAPPDATA%\Easel, which this installer never writes and the uninstaller never removes.

#ifndef AppVersion
  #error AppVersion is not defined: build with installers\windows\build.ps1, which reads it from pyproject.toml
#endif
#ifndef NumericVersion
  #error NumericVersion is not defined: build with installers\windows\build.ps1
#endif
#ifndef Flavour
  #error Flavour is not defined: build with installers\windows\build.ps1 -Flavour cpu, cuda or directml
#endif
#ifndef BundleDir
  #error BundleDir (PyInstaller's dist\Easel folder) is not defined: build with installers\windows\build.ps1
#endif
#ifndef IconFile
  #error IconFile is not defined: build with installers\windows\build.ps1
#endif
#ifndef OutputDir
  #define OutputDir "."
#endif

#if Flavour == "cpu"
  #define FlavourName "CPU"
#elif Flavour == "cuda"
  #define FlavourName "NVIDIA CUDA"
#elif Flavour == "directml"
  #define FlavourName "DirectML"
#else
  #error Flavour must be cpu, cuda or directml
#endif

#define ProgId "Easel.Picture"

[Setup]
; One AppId for every flavour: installing another flavour replaces the installed one.
AppId={{2BCC68D6-A98B-4F81-8B35-A63E18281D3F}
AppName=Easel
AppVersion={#AppVersion}
AppVerName=Easel {#AppVersion} ({#FlavourName})
AppPublisher=Easel
AppComments=Offline image studio ({#FlavourName} flavour)
VersionInfoVersion={#NumericVersion}
VersionInfoProductVersion={#NumericVersion}
VersionInfoProductTextVersion={#AppVersion}
DefaultDirName={autopf}\Easel
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog commandline
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
OutputDir={#OutputDir}
OutputBaseFilename=Easel-{#AppVersion}-windows-{#Flavour}-setup
SetupIconFile={#IconFile}
UninstallDisplayIcon={app}\easelw.exe
UninstallDisplayName=Easel ({#FlavourName})
WizardStyle=modern
Compression=lzma2
SolidCompression=yes
LZMAUseSeparateProcess=yes
LZMANumBlockThreads=2
ChangesAssociations=yes
ChangesEnvironment=yes
CloseApplications=yes

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "addtopath"; Description: "Add the easel command to PATH (for the command line)"; Flags: unchecked

[InstallDelete]
; A previous version's or another flavour's files (an old onnxruntime DLL left beside a new
; one would be loaded). Only the program folder: the user's data is elsewhere.
Type: filesandordirs; Name: "{app}\_internal"

[Files]
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
; easelw.exe: the window without a console window behind it.
Name: "{autoprograms}\Easel"; Filename: "{app}\easelw.exe"; Comment: "Make pictures from text on your own machine"
Name: "{autodesktop}\Easel"; Filename: "{app}\easelw.exe"; Tasks: desktopicon

[Registry]
; "Open with Easel": a ProgID that opens the picture as the source picture (easel open PICTURE),
; offered for each picture type without taking over as its default program. The types are
; those of macOS's Info.plist and the Linux desktop entry (tests/test_installer_recipes.py).
Root: HKA; Subkey: "Software\Classes\{#ProgId}"; ValueType: string; ValueName: ""; ValueData: "Picture"; Flags: uninsdeletekey
Root: HKA; Subkey: "Software\Classes\{#ProgId}\DefaultIcon"; ValueType: string; ValueName: ""; ValueData: "{app}\easelw.exe,0"
Root: HKA; Subkey: "Software\Classes\{#ProgId}\shell\open\command"; ValueType: string; ValueName: ""; ValueData: """{app}\easelw.exe"" open ""%1"""
Root: HKA; Subkey: "Software\Classes\.png\OpenWithProgids"; ValueType: string; ValueName: "{#ProgId}"; ValueData: ""; Flags: uninsdeletevalue
Root: HKA; Subkey: "Software\Classes\.jpg\OpenWithProgids"; ValueType: string; ValueName: "{#ProgId}"; ValueData: ""; Flags: uninsdeletevalue
Root: HKA; Subkey: "Software\Classes\.jpeg\OpenWithProgids"; ValueType: string; ValueName: "{#ProgId}"; ValueData: ""; Flags: uninsdeletevalue
Root: HKA; Subkey: "Software\Classes\.webp\OpenWithProgids"; ValueType: string; ValueName: "{#ProgId}"; ValueData: ""; Flags: uninsdeletevalue
; The program's own entry: its name in the "Open with" list and the types it takes.
Root: HKA; Subkey: "Software\Classes\Applications\easelw.exe"; ValueType: string; ValueName: "FriendlyAppName"; ValueData: "Easel"; Flags: uninsdeletekey
Root: HKA; Subkey: "Software\Classes\Applications\easelw.exe\shell\open\command"; ValueType: string; ValueName: ""; ValueData: """{app}\easelw.exe"" open ""%1"""
Root: HKA; Subkey: "Software\Classes\Applications\easelw.exe\SupportedTypes"; ValueType: string; ValueName: ".png"; ValueData: ""
Root: HKA; Subkey: "Software\Classes\Applications\easelw.exe\SupportedTypes"; ValueType: string; ValueName: ".jpg"; ValueData: ""
Root: HKA; Subkey: "Software\Classes\Applications\easelw.exe\SupportedTypes"; ValueType: string; ValueName: ".jpeg"; ValueData: ""
Root: HKA; Subkey: "Software\Classes\Applications\easelw.exe\SupportedTypes"; ValueType: string; ValueName: ".webp"; ValueData: ""

[Run]
Filename: "{app}\easelw.exe"; Description: "{cm:LaunchProgram,Easel}"; Flags: nowait postinstall skipifsilent

[Code]
// The "addtopath" task: {app} on the user's PATH (the machine's, when installed for all
// users), taken off again at uninstall. Nothing else of the user's is touched.
const
  UserEnvironment = 'Environment';
  MachineEnvironment = 'SYSTEM\CurrentControlSet\Control\Session Manager\Environment';

function PathRoot: Integer;
begin
  if IsAdminInstallMode then
    Result := HKEY_LOCAL_MACHINE
  else
    Result := HKEY_CURRENT_USER;
end;

function PathKey: String;
begin
  if IsAdminInstallMode then
    Result := MachineEnvironment
  else
    Result := UserEnvironment;
end;

procedure AddToPath(Dir: String);
var
  Paths: String;
begin
  if not RegQueryStringValue(PathRoot, PathKey, 'Path', Paths) then
    Paths := '';
  if Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Paths) + ';') > 0 then
    exit;
  if (Paths <> '') and (Copy(Paths, Length(Paths), 1) <> ';') then
    Paths := Paths + ';';
  RegWriteExpandStringValue(PathRoot, PathKey, 'Path', Paths + Dir);
end;

procedure RemoveFromPath(Dir: String);
var
  Paths: String;
  Found: Integer;
begin
  if not RegQueryStringValue(PathRoot, PathKey, 'Path', Paths) then
    exit;
  Paths := ';' + Paths + ';';
  Found := Pos(';' + Uppercase(Dir) + ';', Uppercase(Paths));
  if Found = 0 then
    exit;
  Delete(Paths, Found, Length(Dir) + 1);
  RegWriteExpandStringValue(PathRoot, PathKey, 'Path', Copy(Paths, 2, Length(Paths) - 2));
end;

procedure CurStepChanged(CurStep: TSetupStep);
begin
  if (CurStep = ssPostInstall) and WizardIsTaskSelected('addtopath') then
    AddToPath(ExpandConstant('{app}'));
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if CurUninstallStep = usPostUninstall then
    RemoveFromPath(ExpandConstant('{app}'));
end;
